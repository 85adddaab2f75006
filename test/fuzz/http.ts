import fc from 'fast-check'
import { damagedBytes, describe, hostileText, mutatedJson, params, RUNS } from './lib.ts'
import type { FastifyInstance, InjectOptions } from 'fastify'

/**
 * HTTP fuzzing through `app.inject`: each route has one or more valid
 * requests; the fuzzer mutates the body (JSON mutations and byte damage),
 * the query string, the path parameters and the headers, and checks every
 * answer: never a 500, every 4xx/5xx a JSON error body with a code and a
 * message, every schema refusal naming the field.
 */
export interface RouteCase {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
  /** the path with real values; `params` marks the segments the fuzzer may replace */
  url: string
  params?: string[]
  query?: Record<string, string>
  /** valid JSON bodies (one is picked) */
  bodies?: unknown[]
  headers?: Record<string, string>
  /** a valid non-JSON body (a multipart form, a zip): mutated by byte damage only */
  raw?: { payload: Buffer, headers: Record<string, string> }
  /** a route that answers with an event stream: checked with a short timeout, not a body */
  stream?: boolean
}

type Request = { kind: string, opts: InjectOptions }

const junkSegments = fc.oneof(
  fc.constantFrom('%zz', '%00', '..%2f..%2fetc%2fpasswd', '%2e%2e', '%ff%fe', '%C0%AE', '__proto__', 'constructor', '%20', '-', '.', 'A'.repeat(70), 'x'.repeat(10_000), '%E2%80%AE', '1e999', 'null', '%0d%0aX-Injected:1'),
  fc.string({ minLength: 1, maxLength: 80 }).map(encodeURIComponent)
)

const junkQueryValues = fc.oneof(
  fc.constantFrom('', '-1', '0', '1e308', 'NaN', 'true', '[]', '{}', '%zz', 'x'.repeat(100_000), '9007199254740993', '\u0000', '2147483648'),
  fc.string({ maxLength: 60 })
)

const junkHeaders: fc.Arbitrary<[string, Record<string, string>]> = fc.oneof(
  fc.constantFrom<[string, Record<string, string>]>(
    ['content-type text/plain', { 'content-type': 'text/plain' }],
    ['content-type garbage', { 'content-type': ';;;=/' }],
    ['content-type json with charset latin1', { 'content-type': 'application/json; charset=latin1' }],
    ['content-type multipart without boundary', { 'content-type': 'multipart/form-data' }],
    ['content-type zip', { 'content-type': 'application/zip' }],
    ['content-encoding gzip', { 'content-encoding': 'gzip' }],
    ['authorization garbage', { authorization: 'Bearer \u00ff\u00fe' }],
    ['authorization basic', { authorization: 'Basic YWRtaW46YWRtaW4=' }],
    ['authorization huge', { authorization: `Bearer ${'a'.repeat(16_000)}` }],
    ['authorization forged jwt', { authorization: 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.' }],
    ['host not loopback', { host: 'evil.example' }],
    ['accept weird', { accept: 'application/x-nope' }],
    ['x-forwarded-for spoof', { 'x-forwarded-for': '1.2.3.4, 5.6.7.8' }]
  )
)

function withQuery (url: string, query: Array<[string, string]>): string {
  if (query.length === 0) return url
  return `${url}?${query.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')}`
}

/** Hostile variants of one route's valid request. */
export function hostileRequests (route: RouteCase): fc.Arbitrary<Request> {
  const baseQuery: Array<[string, string]> = Object.entries(route.query ?? {})
  const baseHeaders = { ...(route.headers ?? {}) }
  const validBody = route.bodies?.[0]
  const jsonHeaders = validBody === undefined ? baseHeaders : { 'content-type': 'application/json', ...baseHeaders }
  const base = (kind: string, extra: Partial<InjectOptions> = {}): Request => ({
    kind,
    opts: { method: route.method, url: withQuery(route.url, baseQuery), headers: jsonHeaders, ...(validBody === undefined ? {} : { payload: JSON.stringify(validBody) }), ...extra }
  })
  const variants: Array<fc.Arbitrary<Request>> = [
    fc.constant(base('valid')),
    // query: a value replaced, an unknown parameter, a parameter repeated
    fc.tuple(junkQueryValues, fc.constantFrom('replace', 'unknown', 'repeat', 'prototype')).map(([v, how]) => {
      let q = [...baseQuery]
      if (how === 'replace' && q.length > 0) q = q.map(([k], i) => [k, i === 0 ? v : q[i]![1]])
      else if (how === 'repeat' && q.length > 0) q.push([q[0]![0], v])
      else if (how === 'prototype') q.push(['__proto__[x]', v])
      else q.push(['surprise', v])
      return { kind: `query ${how} ${JSON.stringify(v.slice(0, 20))}`, opts: { ...base('').opts, url: withQuery(route.url, q) } }
    }),
    // headers
    junkHeaders.map(([kind, h]) => ({ kind: `header ${kind}`, opts: { ...base('').opts, headers: { ...jsonHeaders, ...h } } }))
  ]
  if (route.params != null && route.params.length > 0) {
    variants.push(fc.tuple(fc.constantFrom(...route.params), junkSegments).map(([p, junk]) =>
      ({ kind: `path ${p} → ${junk.slice(0, 30)}`, opts: { ...base('').opts, url: withQuery(route.url.replace(p, junk), baseQuery) } })))
  }
  if (route.raw != null) {
    const raw = route.raw
    variants.push(fc.constant({ kind: 'valid raw body', opts: { ...base('').opts, headers: { ...baseHeaders, ...raw.headers }, payload: raw.payload } }))
    variants.push(damagedBytes(new Uint8Array(raw.payload)).map(d => ({ kind: `raw body ${d.kind}`, opts: { ...base('').opts, headers: { ...baseHeaders, ...raw.headers }, payload: Buffer.from(d.bytes) } })))
  }
  if (route.bodies != null) {
    variants.push(hostileText(route.bodies).map(h => ({ kind: `body ${h.kind}`, opts: { ...base('').opts, payload: Buffer.from(h.bytes) } })))
    variants.push(mutatedJson(route.bodies).map(m => ({ kind: `body ${m.kind}`, opts: { ...base('').opts, payload: m.text } })))
    variants.push(mutatedJson(route.bodies).chain(m => damagedBytes(Buffer.from(m.text))).map(d => ({ kind: `body ${d.kind}`, opts: { ...base('').opts, payload: Buffer.from(d.bytes) } })))
  } else if (route.method !== 'GET' && route.raw == null) {
    variants.push(hostileText([{}, [], 'x']).map(h => ({ kind: `unexpected body ${h.kind}`, opts: { ...base('').opts, headers: { ...jsonHeaders, 'content-type': 'application/json' }, payload: Buffer.from(h.bytes) } })))
  }
  return fc.oneof(...variants)
}

/** What is wrong with one answer, or undefined. */
export function checkAnswer (status: number, headers: Record<string, unknown>, text: string): string | undefined {
  if (status === 500) return `500: ${text.slice(0, 300)}`
  if (status < 400) return undefined
  // Node's HTTP parser refuses a request line or headers past its limit before routing
  // (fastify's client-error answer, not the app's): not the app's refusal to check
  if (status === 431 || status === 414) return undefined
  const type = String(headers['content-type'] ?? '')
  if (!type.includes('application/json')) return `${status} with content-type ${type}: ${text.slice(0, 200)}`
  let body: any
  try { body = JSON.parse(text) } catch { return `${status} body is not JSON: ${text.slice(0, 200)}` }
  if (typeof body?.code !== 'string' || body.code === '') return `${status} without an error code: ${text.slice(0, 200)}`
  if (typeof body.message !== 'string' || body.message === '') return `${status} without a message: ${text.slice(0, 200)}`
  if (status >= 500 && body.code === 'ERR_INTERNAL') return `${status} ERR_INTERNAL: ${text.slice(0, 200)}`
  if (body.code === 'ERR_VALIDATION') {
    if (typeof body.field !== 'string' || !/^(body|querystring|params|headers)\b/.test(body.field)) return `schema refusal without the field: ${text.slice(0, 200)}`
    if (!body.message.includes(body.field)) return `schema refusal whose message does not name ${body.field}: ${body.message}`
  }
  return undefined
}

/** One answer, however it was fetched. */
export interface Answer { status: number, headers: Record<string, unknown>, text: string }
export type Sender = (opts: InjectOptions, stream?: boolean) => Promise<Answer>

/** Through `app.inject`: no socket, the app's real handlers. */
export function injectSender (app: FastifyInstance): Sender {
  return async opts => {
    const res = await app.inject(opts)
    return { status: res.statusCode, headers: res.headers, text: res.body }
  }
}

/** Over real HTTP to 127.0.0.1; event streams are read to their head, then hung up. */
export function fetchSender (baseUrl: string): Sender {
  return async (opts, stream = false) => {
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), 30_000)
    try {
      const { host: _host, ...headers } = (opts.headers ?? {}) as Record<string, string>
      const payload = opts.payload as string | Buffer | undefined
      const res = await fetch(baseUrl + String(opts.url), { method: String(opts.method), headers, ...(payload == null ? {} : { body: payload }), signal: controller.signal })
      const head: Record<string, string> = Object.fromEntries(res.headers.entries())
      const text = stream && res.status < 400 ? '' : await res.text()
      return { status: res.status, headers: head, text }
    } finally {
      clearTimeout(timer)
      controller.abort()
    }
  }
}

export interface FuzzRouteOptions {
  /** headers every request carries (the caller's token); a fuzzed header may replace them */
  auth: Record<string, string>
  /** a valid request the server must still answer after each route's batch */
  alive: () => Promise<boolean>
  send: Sender
  runs?: number
}

/** Fuzz one route; returns the problems seen (empty when all is well). */
export async function fuzzRoute (route: RouteCase, options: FuzzRouteOptions): Promise<string[]> {
  const problems: string[] = []
  const label = `${route.method} ${route.url}`
  await fc.assert(fc.asyncProperty(hostileRequests(route), async req => {
    const opts = { ...req.opts, headers: { ...options.auth, ...req.opts.headers as Record<string, string> } }
    try {
      const res = await options.send(opts, route.stream === true)
      const problem = checkAnswer(res.status, res.headers, res.text)
      if (problem != null) problems.push(`${label} ${req.kind}: ${problem}`)
    } catch (err) {
      problems.push(`${label} ${req.kind}: request failed ${describe(err)}`)
    }
  }), params(label, options.runs ?? RUNS))
  if (!await options.alive()) problems.push(`${label}: the server no longer answers a valid request`)
  return problems
}
