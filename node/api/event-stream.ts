import { TooManyStreamsError } from './errors.ts'
import type { ServerResponse } from 'node:http'
import type { FastifyReply } from 'fastify'
import type { Logger } from 'pino'

export const DEFAULT_HEARTBEAT_MS = 15_000
/**
 * Bytes of events waiting for a slow reader; past it the stream is closed.
 * Room for a burst (an anti-entropy round applying many entries at once)
 * that a reader who keeps up takes a moment later.
 */
export const DEFAULT_MAX_PENDING_BYTES = 2 * 1024 * 1024
const RETRY_AFTER_SEC = 5
/** A closed stream whose reader never takes the last bytes is cut after this long. */
const END_GRACE_MS = 5_000

export interface EventStreamsInit {
  /** Streams open at once; more are refused with TooManyStreamsError (429). */
  max: number
  /** @default DEFAULT_HEARTBEAT_MS */
  heartbeatMs?: number
  /** @default DEFAULT_MAX_PENDING_BYTES */
  maxPendingBytes?: number
  /** Told the number of open streams whenever it changes (a gauge). */
  onCount?: (open: number) => void
  logger?: Pick<Logger, 'debug'>
}

/** Why a stream ended, as its last `close` event says. */
export type CloseReason = 'slow-consumer' | 'shutdown' | 'expired'

/**
 * The Server-Sent Event streams of one route, at most `max` at once. Each
 * stream is bounded whatever its reader does: events go to the socket while
 * it keeps up; while it does not (the socket is past its high-water mark
 * and waits for `drain`), they wait in memory, coalesced by key so that a burst of changes to one thing
 * costs one event, and when even that passes `maxPendingBytes` the stream
 * ends with an `event: close` saying `slow-consumer` (the client
 * reconnects and starts from a fresh snapshot). A reader that goes away,
 * mid-event or not, just ends its stream: nothing is logged above debug.
 */
export class EventStreams {
  readonly #init: StreamOptions & Pick<EventStreamsInit, 'max' | 'onCount'>
  readonly #open = new Set<EventStream>()

  constructor (init: EventStreamsInit) {
    this.#init = {
      ...init,
      heartbeatMs: init.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      maxPendingBytes: init.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES
    }
  }

  get size (): number {
    return this.#open.size
  }

  /** Take over the reply and start a stream, or throw TooManyStreamsError. */
  open (reply: FastifyReply): EventStream {
    if (this.#open.size >= this.#init.max) {
      void reply.header('retry-after', String(RETRY_AFTER_SEC))
      throw new TooManyStreamsError(`${this.#open.size} event streams are open; the limit is ${this.#init.max}`)
    }
    reply.hijack()
    const stream = new EventStream(reply.raw, this.#init, () => {
      this.#open.delete(stream)
      this.#init.onCount?.(this.#open.size)
    })
    this.#open.add(stream)
    this.#init.onCount?.(this.#open.size)
    return stream
  }

  /** End every stream (server shutdown): hijacked responses would keep it from closing. */
  closeAll (reason: CloseReason = 'shutdown'): void {
    for (const s of [...this.#open]) s.close(reason)
  }
}

interface StreamOptions {
  heartbeatMs: number
  maxPendingBytes: number
  logger?: Pick<Logger, 'debug'>
}

export class EventStream {
  readonly #res: ServerResponse
  readonly #init: StreamOptions
  readonly #onEnd: () => void
  readonly #pending = new Map<string, string>()
  readonly #closers: Array<() => void> = []
  readonly #heartbeat: NodeJS.Timeout
  #pendingBytes = 0
  #seq = 0
  #ended = false

  constructor (res: ServerResponse, init: StreamOptions, onEnd: () => void) {
    this.#res = res
    this.#init = init
    this.#onEnd = onEnd
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    // a reader that went away is an ordinary end of a stream, not an error
    res.on('error', err => { init.logger?.debug({ err: err.message }, 'event stream write failed') })
    res.on('close', () => { this.#finish() })
    res.on('drain', () => { this.#flush() })
    this.#heartbeat = setInterval(() => {
      this.comment('ping')
    }, init.heartbeatMs)
    this.#heartbeat.unref()
  }

  /** True once the stream ended, for whatever reason. */
  get closed (): boolean {
    return this.#ended
  }

  /** Bytes held for this reader: queued on the socket plus events waiting. */
  get bufferedBytes (): number {
    return this.#res.writableLength + this.#pendingBytes
  }

  /** True while the reader lags: the socket waits for `drain` or events wait in memory. */
  get blocked (): boolean {
    return this.#pending.size > 0 || this.#res.writableNeedDrain
  }

  /** Run `fn` each time the socket drained (after what waited was written). */
  onDrain (fn: () => void): void {
    this.#res.on('drain', fn)
  }

  /** Run when the stream ends (unsubscribe here). */
  onClose (fn: () => void): void {
    if (this.#ended) fn()
    else this.#closers.push(fn)
  }

  /**
   * Send `event` with `data` (JSON). While the reader lags, a later event
   * with the same `key` replaces the one waiting: use the key of the thing
   * it describes, so only its latest state is kept.
   */
  send (event: string, data: unknown, key?: string): void {
    if (this.#ended) return
    const text = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
    if (this.#pending.size === 0 && !this.#res.writableNeedDrain) {
      this.#write(text)
      return
    }
    const k = key ?? `#${this.#seq++}`
    const previous = this.#pending.get(k)
    if (previous != null) {
      this.#pendingBytes -= previous.length
      // the latest state goes where the latest change would have gone
      this.#pending.delete(k)
    }
    this.#pending.set(k, text)
    this.#pendingBytes += text.length
    if (this.#pendingBytes > this.#init.maxPendingBytes) this.close('slow-consumer')
  }

  /** A comment line (`: text`), e.g. so the reader sees the stream open before any event. */
  comment (text: string): void {
    if (this.#ended || this.#pending.size > 0 || this.#res.writableNeedDrain) return
    this.#write(`: ${text.replaceAll('\n', ' ')}\n\n`)
  }

  /** End with a last `event: close` that says why; the reader may reconnect. */
  close (reason: CloseReason, event = 'close'): void {
    if (this.#ended) return
    this.#pending.clear()
    this.#pendingBytes = 0
    this.#write(`event: ${event}\ndata: ${JSON.stringify({ reason })}\n\n`)
    this.#res.end()
    // a reader that takes nothing more would hold the socket (and what is queued on it) forever
    setTimeout(() => { if (!this.#res.destroyed) this.#res.destroy() }, END_GRACE_MS).unref()
    this.#finish()
  }

  #write (text: string): void {
    if (this.#res.destroyed || this.#res.writableEnded) return
    this.#res.write(text)
  }

  #flush (): void {
    for (const [k, text] of this.#pending) {
      if (this.#res.writableNeedDrain) return
      this.#pending.delete(k)
      this.#pendingBytes -= text.length
      this.#write(text)
    }
  }

  #finish (): void {
    if (this.#ended) return
    this.#ended = true
    clearInterval(this.#heartbeat)
    this.#pending.clear()
    this.#pendingBytes = 0
    for (const fn of this.#closers.splice(0)) {
      try {
        fn()
      } catch (err: any) {
        this.#init.logger?.debug({ err: err.message }, 'event stream close handler failed')
      }
    }
    this.#onEnd()
  }
}
