import { Type, type Static } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { ProtocolMessageError } from '../errors.ts'
import { messageChannel, timeoutSignal, type MessageChannel } from '../stream.ts'
import type { Stream } from '@libp2p/interface'

/**
 * Mesh-wide log search. The asker (the coordinator) opens a stream and sends
 * one `query`; the answerer streams matching lines from its own log store a
 * page at a time, each page only after the asker sends `next`, so neither
 * side buffers more than one page however many lines match. The answerer
 * closes after the last page (`done: true`) or after `limit` lines.
 */
export const LOG_QUERY_PROTOCOL = '/gatemesh/log-query/1.0.0'

export const MAX_QUERY_LIMIT = 100_000
export const MAX_PAGE_ENTRIES = 500
/** A stored line is at most 8 KiB; a page stays under the frame limit. */
export const MAX_LINE_CHARS = 8 * 1024
const PAGE_BUDGET_BYTES = 256 * 1024
export const DEFAULT_PAGE_TIMEOUT_MS = 10_000
/** How long an answerer waits for the asker's next `next`. */
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000

const Level = Type.Union([Type.Literal('trace'), Type.Literal('debug'), Type.Literal('info'), Type.Literal('warn'), Type.Literal('error'), Type.Literal('fatal')])
const EpochMs = Type.Integer({ minimum: 0, maximum: 10 ** 15 })

export const LogQuerySchema = Type.Object({
  since: Type.Optional(EpochMs),
  until: Type.Optional(EpochMs),
  level: Type.Optional(Level),
  services: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 })),
  text: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  order: Type.Union([Type.Literal('asc'), Type.Literal('desc')])
}, { additionalProperties: false })

export const LogQueryMessageSchema = Type.Union([
  Type.Object({
    type: Type.Literal('query'),
    query: LogQuerySchema,
    /** most lines to return in all */
    limit: Type.Integer({ minimum: 1, maximum: MAX_QUERY_LIMIT }),
    /** most lines per page */
    pageSize: Type.Integer({ minimum: 1, maximum: MAX_PAGE_ENTRIES })
  }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('next') }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('page'),
    entries: Type.Array(Type.String({ minLength: 2, maxLength: MAX_LINE_CHARS }), { maxItems: MAX_PAGE_ENTRIES }),
    done: Type.Boolean()
  }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('error'),
    code: Type.String({ minLength: 1, maxLength: 64 }),
    message: Type.String({ maxLength: 1024 })
  }, { additionalProperties: false })
])

export type LogQueryMessage = Static<typeof LogQueryMessageSchema>
export type WireLogQuery = Static<typeof LogQuerySchema>

export const logQueryCodec = new JsonCodec({ name: 'log-query', version: 1, schema: LogQueryMessageSchema, maxBytes: 1024 * 1024 })

/** The answerer refused the query (e.g. the asker is not a coordinator). */
export class LogQueryRefusedError extends ProtocolMessageError {
  override readonly code = 'ERR_LOG_QUERY_REFUSED'
  override readonly name = 'LogQueryRefusedError'
  readonly reason: string

  constructor (reason: string, message: string) {
    super(message)
    this.reason = reason
  }
}

type Channel = MessageChannel<typeof LogQueryMessageSchema>

export interface LogQueryRequest {
  query: WireLogQuery
  limit: number
  pageSize: number
}

export interface AskOptions {
  /** Longest wait for one page. @default DEFAULT_PAGE_TIMEOUT_MS */
  pageTimeoutMs?: number
  signal?: AbortSignal
}

/**
 * Asker side: the lines the answerer finds, page by page. Pulling the next
 * page is what asks for it; returning early closes the stream.
 */
export async function * askLogs (stream: Stream, request: LogQueryRequest, options: AskOptions = {}): AsyncGenerator<string[]> {
  const channel: Channel = messageChannel(stream, logQueryCodec)
  const pageTimeout = options.pageTimeoutMs ?? DEFAULT_PAGE_TIMEOUT_MS
  let finished = false
  try {
    await channel.write({ type: 'query', ...request }, { signal: timeoutSignal(pageTimeout, options.signal) })
    let received = 0
    while (true) {
      const msg = await channel.read({ signal: timeoutSignal(pageTimeout, options.signal) })
      if (msg.type === 'error') throw new LogQueryRefusedError(msg.code, `log-query refused: ${msg.message}`)
      if (msg.type !== 'page') throw new ProtocolMessageError(`log-query: expected page, got ${msg.type}`)
      received += msg.entries.length
      if (received > request.limit || msg.entries.length > request.pageSize) throw new ProtocolMessageError('log-query: answer exceeds the limits asked for')
      if (msg.entries.length > 0) yield msg.entries
      if (msg.done) break
      await channel.write({ type: 'next' }, { signal: timeoutSignal(pageTimeout, options.signal) })
    }
    finished = true
    await channel.close({ signal: timeoutSignal(pageTimeout, options.signal) })
  } catch (err: any) {
    finished = true
    stream.abort(err)
    throw err
  } finally {
    // the consumer stopped early: nothing more is wanted
    if (!finished) stream.abort(new Error('log query closed by the asker'))
  }
}

/** Where the answerer reads lines from: a lazy iterator over its log store. */
export type LogSource = (query: WireLogQuery, signal: AbortSignal) => AsyncIterable<string>

export interface AnswerOptions {
  /** Refuse before reading anything: return a reason, or undefined to answer. */
  refuse?: () => string | undefined
  /** Longest wait for the asker's next message. @default DEFAULT_IDLE_TIMEOUT_MS */
  idleTimeoutMs?: number
  signal?: AbortSignal
}

/** Answerer side of one query. */
export async function answerLogs (stream: Stream, source: LogSource, options: AnswerOptions = {}): Promise<{ sent: number }> {
  const channel: Channel = messageChannel(stream, logQueryCodec)
  const idle = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS
  const abort = new AbortController()
  const signal = options.signal == null ? abort.signal : AbortSignal.any([abort.signal, options.signal])
  let sent = 0
  let lines: AsyncIterator<string> | undefined
  try {
    const first = await channel.read({ signal: timeoutSignal(idle, signal) })
    if (first.type !== 'query') throw new ProtocolMessageError(`log-query: expected query, got ${first.type}`)
    const refusal = options.refuse?.()
    if (refusal != null) {
      await channel.write({ type: 'error', code: 'ERR_FORBIDDEN', message: refusal }, { signal: timeoutSignal(idle, signal) })
      await channel.close({ signal: timeoutSignal(idle, signal) })
      return { sent }
    }
    lines = source(first.query, signal)[Symbol.asyncIterator]()
    let exhausted = false
    while (true) {
      const page: string[] = []
      let bytes = 0
      while (page.length < first.pageSize && sent + page.length < first.limit && bytes < PAGE_BUDGET_BYTES) {
        const next = await lines.next()
        if (next.done === true) {
          exhausted = true
          break
        }
        if (next.value.length > MAX_LINE_CHARS || next.value.length < 2) continue
        page.push(next.value)
        bytes += next.value.length * 3
      }
      sent += page.length
      const done = exhausted || sent >= first.limit
      await channel.write({ type: 'page', entries: page, done }, { signal: timeoutSignal(idle, signal) })
      if (done) break
      const more = await channel.read({ signal: timeoutSignal(idle, signal) })
      if (more.type !== 'next') throw new ProtocolMessageError(`log-query: expected next, got ${more.type}`)
    }
    await channel.close({ signal: timeoutSignal(idle, signal) })
    return { sent }
  } catch (err: any) {
    stream.abort(err)
    throw err
  } finally {
    abort.abort()
    // releases the store's iterator however the exchange ended
    await lines?.return?.().catch(() => {})
  }
}
