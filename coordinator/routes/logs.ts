import { Readable } from 'node:stream'
import { Type, type Static } from '@sinclair/typebox'
import { BadRequestError } from '../errors.ts'
import { errorResponses } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { SearchQuery } from '../logs/search.ts'
import type { FastifyInstance } from 'fastify'

/** epoch ms, an ISO 8601 date-time, or a duration ago (`90s`, `15m`, `2h`, `7d`) */
const TIME_PATTERN = '^(\\d{1,15}|\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:\\d{2})|\\d{1,6}[smhd])$'
const Time = Type.String({ pattern: TIME_PATTERN, description: 'epoch ms, ISO 8601 date-time, or a duration ago such as 15m, 2h, 7d' })
const Level = Type.Union(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].map(l => Type.Literal(l)), { description: 'lowest level returned' })

const filters = {
  node: Type.Optional(Type.Array(Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' }), { maxItems: 256, description: 'peer ids; default: every live node' })),
  service: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 })),
  level: Type.Optional(Level),
  since: Type.Optional(Time),
  until: Type.Optional(Time),
  text: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'case-insensitive substring of the JSON line' })),
  order: Type.Union([Type.Literal('desc'), Type.Literal('asc')], { default: 'desc' })
}

const SearchQuerySchema = Type.Object({ ...filters, limit: Type.Integer({ minimum: 1, maximum: 1000, default: 200 }) }, { additionalProperties: false })
const DownloadQuerySchema = Type.Object({ ...filters, limit: Type.Integer({ minimum: 1, maximum: 100_000, default: 10_000 }) }, { additionalProperties: false })

const NodeReport = Type.Object({
  peerId: Type.String(),
  state: Type.String(),
  returned: Type.Integer(),
  error: Type.Optional(Type.String())
})

const SearchResult = Type.Object({
  entries: Type.Array(Type.Object({
    time: Type.Integer(),
    level: Type.String(),
    node: Type.String(),
    service: Type.Optional(Type.String()),
    msg: Type.Optional(Type.String())
  }, { additionalProperties: true })),
  count: Type.Integer(),
  /** the limit cut the result short */
  truncated: Type.Boolean(),
  nodes: Type.Array(NodeReport)
})

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

function parseTime (value: string | undefined, field: string, now: number): number | undefined {
  if (value == null) return undefined
  if (/^\d+$/.test(value)) return Number(value)
  const unit = UNIT_MS[value.at(-1)!]
  if (unit != null && /^\d+[smhd]$/.test(value)) return now - Number(value.slice(0, -1)) * unit
  const ms = Date.parse(value)
  if (Number.isNaN(ms)) throw new BadRequestError(`${field}: "${value}" is not a date-time`, { field })
  return ms
}

function toSearch (q: Static<typeof SearchQuerySchema>): SearchQuery {
  const now = Date.now()
  const since = parseTime(q.since, 'querystring.since', now)
  const until = parseTime(q.until, 'querystring.until', now)
  if (since != null && until != null && since > until) throw new BadRequestError('querystring.since: is after until', { field: 'querystring.since' })
  const search: SearchQuery = { limit: q.limit, order: q.order }
  if (q.node != null) search.nodes = q.node
  if (q.service != null) search.services = q.service
  if (q.level != null) search.level = q.level as SearchQuery['level']
  if (since != null) search.since = since
  if (until != null) search.until = until
  if (q.text != null) search.text = q.text
  return search
}

const tags = ['logs']
const config = { service: 'logs' as const }

/**
 * Mesh-wide log search: the query goes to every live node (or those named)
 * over the log-query protocol and the answers are merged by time. Nothing
 * is collected here; a node's logs are searchable while it is up.
 */
export async function logRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { logs, metrics } = ctx

  app.get<{ Querystring: Static<typeof SearchQuerySchema> }>('/api/v1/logs', {
    config,
    schema: {
      tags,
      summary: 'Search the logs of every node by node, service, level, time and text',
      description: '`nodes` reports, per node, how many lines it contributed or why it could not answer.',
      querystring: SearchQuerySchema,
      response: { 200: SearchResult, ...errorResponses(400, 401, 403) }
    }
  }, async (request) => {
    const query = toSearch(request.query)
    const search = logs.search(query)
    const entries = []
    for await (const entry of search.entries) entries.push(entry)
    metrics.logSearches.inc({ kind: 'search' })
    return { entries, count: entries.length, truncated: entries.length >= query.limit, nodes: search.report() }
  })

  app.get<{ Querystring: Static<typeof DownloadQuerySchema> }>('/api/v1/logs/download', {
    config,
    schema: {
      tags,
      summary: 'The same search as NDJSON, streamed as the nodes answer (up to 100 000 lines)',
      querystring: DownloadQuerySchema,
      response: { 200: { description: 'one JSON log line per line', type: 'string' }, ...errorResponses(400, 401, 403) }
    }
  }, async (request, reply) => {
    const query = toSearch(request.query)
    const abort = new AbortController()
    reply.raw.on('close', () => { abort.abort() })
    const search = logs.search(query, abort.signal)
    metrics.logSearches.inc({ kind: 'download' })
    const lines = (async function * () {
      for await (const entry of search.entries) yield JSON.stringify(entry) + '\n'
    })()
    const stamp = new Date().toISOString().replaceAll(':', '-').slice(0, 19)
    return await reply
      .type('application/x-ndjson; charset=utf-8')
      .header('content-disposition', `attachment; filename="gatemesh-logs-${stamp}.ndjson"`)
      .send(Readable.from(lines))
  })
}
