import { lpStream } from '@libp2p/utils'
import { ProtocolMessageError } from '../errors.ts'
import { frameCodec, MAX_FRAME_BYTES, MAX_SEQ, type Frame, type Gossip, type Reply, type Request, type Unsequenced } from './wire.ts'
import type { Stream } from '@libp2p/interface'

/** No reply came in time, or the link closed first. */
export class ProbeTimeoutError extends ProtocolMessageError {
  override readonly code = 'ERR_PROBE_TIMEOUT'
  override readonly name = 'ProbeTimeoutError'
}

/** The link is closed (or was never usable): the peer is not reachable over it. */
export class LinkClosedError extends ProtocolMessageError {
  override readonly code = 'ERR_LINK_CLOSED'
  override readonly name = 'LinkClosedError'
}

/** Too many requests are waiting on this link already. */
export class LinkBusyError extends ProtocolMessageError {
  override readonly code = 'ERR_LINK_BUSY'
  override readonly name = 'LinkBusyError'
}

export interface LinkHandler {
  /** Answer a ping or an indirect probe request; undefined sends nothing. */
  onRequest(frame: Request, signal: AbortSignal): Promise<Reply | undefined>
  onGossip(frame: Gossip): void
  /** A frame the peer sent broke the protocol; the link is closed after this. */
  onInvalid?(err: Error): void
}

export interface LinkObserver {
  /** `sync` counts push-pull messages, which travel on a stream of their own */
  frame(direction: 'in' | 'out', type: Frame['t'] | 'sync', bytes: number): void
}

export interface LinkInit {
  /** Requests of ours awaiting replies on this link. @default 64 */
  maxPending?: number
  /** Requests of the peer's answered at once; more are dropped unanswered. @default 8 */
  maxConcurrent?: number
  observer?: LinkObserver
}

/** What lpStream throws for a length prefix past the limit or malformed: the peer's fault, as bad JSON is. */
const FRAMING_ERRORS = new Set(['InvalidDataLengthError', 'InvalidDataLengthLengthError', 'InvalidMessageLengthError', 'StreamBufferError'])

interface Pending {
  resolve(reply: Reply): void
  reject(err: Error): void
  timer: NodeJS.Timeout
}

/**
 * One long-lived SWIM stream between two members, used in both directions:
 * either side sends requests (`ping`, `req`) with its own sequence numbers
 * and reads the replies (`ack`, `nack`) that name them, and either side may
 * send `gossip`. A stream per probe would cost a protocol negotiation per
 * probe; this costs one frame each way.
 */
export class SwimLink {
  readonly stream: Stream
  readonly #handler: LinkHandler
  readonly #lp
  readonly #pending = new Map<number, Pending>()
  readonly #maxPending: number
  readonly #maxConcurrent: number
  readonly #observer: LinkObserver | undefined
  readonly #abort = new AbortController()
  #seq = Math.floor(Math.random() * MAX_SEQ)
  #answering = 0
  #closed = false
  #onClose: Array<() => void> = []

  constructor (stream: Stream, handler: LinkHandler, init: LinkInit = {}) {
    this.stream = stream
    this.#handler = handler
    this.#maxPending = init.maxPending ?? 64
    this.#maxConcurrent = init.maxConcurrent ?? 8
    this.#observer = init.observer
    this.#lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES, maxBufferSize: 4 * MAX_FRAME_BYTES })
    stream.addEventListener('close', () => { this.#finish() }, { once: true })
    void this.#readLoop()
  }

  get closed (): boolean {
    return this.#closed
  }

  onClose (fn: () => void): void {
    if (this.#closed) fn()
    else this.#onClose.push(fn)
  }

  /** Send a request and wait for its reply; the request's `seq` is assigned here. */
  async request (frame: Unsequenced, timeoutMs: number): Promise<Reply> {
    if (this.#closed) throw new LinkClosedError('swim link is closed')
    if (this.#pending.size >= this.#maxPending) throw new LinkBusyError(`swim link has ${this.#pending.size} requests waiting`)
    this.#seq = (this.#seq + 1) % (MAX_SEQ + 1)
    const seq = this.#seq
    const reply = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(seq)
        reject(new ProbeTimeoutError(`no reply to ${frame.t} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.#pending.set(seq, { resolve, reject, timer })
    })
    // a close while the write below waits rejects `reply` before anyone awaits it; the write's own error is thrown instead
    reply.catch(() => {})
    try {
      await this.#write({ ...frame, seq } as Request)
    } catch (err: any) {
      const p = this.#pending.get(seq)
      if (p != null) {
        clearTimeout(p.timer)
        this.#pending.delete(seq)
      }
      throw new LinkClosedError(`swim link write failed: ${err.message}`, { cause: err })
    }
    return await reply
  }

  async send (frame: Gossip): Promise<void> {
    if (this.#closed) throw new LinkClosedError('swim link is closed')
    await this.#write(frame)
  }

  close (): void {
    if (this.#closed) return
    this.stream.close().catch(() => { this.stream.abort(new Error('swim link closed')) })
    this.#finish()
  }

  abort (err: Error): void {
    this.stream.abort(err)
    this.#finish()
  }

  async #write (frame: Frame): Promise<void> {
    const bytes = frameCodec.encode(frame)
    this.#observer?.frame('out', frame.t, bytes.byteLength)
    await this.#lp.write(bytes, { signal: this.#abort.signal })
  }

  async #readLoop (): Promise<void> {
    while (!this.#closed) {
      let frame: Frame
      try {
        const bytes = await this.#lp.read({ signal: this.#abort.signal })
        frame = frameCodec.decode(bytes)
        this.#observer?.frame('in', frame.t, bytes.byteLength)
      } catch (err: any) {
        if (!this.#closed && (err instanceof ProtocolMessageError || FRAMING_ERRORS.has(err?.name))) {
          this.#handler.onInvalid?.(err)
          this.abort(err)
        }
        this.#finish()
        return
      }
      this.#dispatch(frame)
    }
  }

  #dispatch (frame: Frame): void {
    switch (frame.t) {
      case 'ack':
      case 'nack': {
        const p = this.#pending.get(frame.re)
        if (p == null) return
        clearTimeout(p.timer)
        this.#pending.delete(frame.re)
        p.resolve(frame)
        return
      }
      case 'gossip':
        this.#handler.onGossip(frame)
        return
      case 'ping':
      case 'req': {
        // a peer that floods requests loses the excess, not our event loop
        if (this.#answering >= this.#maxConcurrent) return
        this.#answering++
        this.#handler.onRequest(frame, this.#abort.signal)
          .then(async reply => { if (reply != null && !this.#closed) await this.#write(reply) })
          .catch(() => {})
          .finally(() => { this.#answering-- })
      }
    }
  }

  #finish (): void {
    if (this.#closed) return
    this.#closed = true
    this.#abort.abort()
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer)
      p.reject(new LinkClosedError('swim link closed'))
    }
    this.#pending.clear()
    for (const fn of this.#onClose) fn()
    this.#onClose = []
  }
}
