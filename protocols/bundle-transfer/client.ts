import { lpStream } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { MalformedMessageError, ProtocolMessageError } from '../errors.ts'
import { timeoutSignal } from '../stream.ts'
import { CHUNK_HEADER_BYTES, checkFrameSize, frameKind, MAX_FRAME_BYTES, transferCodec, type TransferMessage } from './wire.ts'
import type { Stream } from '@libp2p/interface'

export const DEFAULT_REPLY_TIMEOUT_MS = 15_000

/** The provider answered a request with an error message. */
export class TransferRefusedError extends ProtocolMessageError {
  override readonly code = 'ERR_TRANSFER_REFUSED'
  override readonly name = 'TransferRefusedError'
  readonly reason: string

  constructor (reason: string, message: string) {
    super(message)
    this.reason = reason
  }
}

export interface HeadReply { size: number, tailOffset: number, midstate: Uint8Array, tail: Uint8Array }
export interface HaveReply { complete: boolean, bitmap?: Uint8Array }

type Pending =
  | { kind: 'head' | 'have', resolve: (m: TransferMessage) => void, reject: (e: Error) => void }
  | { kind: 'chunk', index: number, resolve: (data: Uint8ArrayList) => void, reject: (e: Error) => void }

export interface TransferClientInit {
  /** Each reply must start arriving within this long of the previous one. @default DEFAULT_REPLY_TIMEOUT_MS */
  replyTimeoutMs?: number
  /** Most bytes buffered unread; set to cover the requests kept in flight. @default 4 frames */
  maxBufferBytes?: number
}

/**
 * The requesting side of one stream to one provider. Requests are written
 * immediately and answered in order, so several chunks can be in flight on
 * one stream; each reply is read with a timeout.
 */
export class TransferClient {
  readonly stream: Stream
  readonly #lp
  readonly #pending: Pending[] = []
  readonly #timeoutMs: number
  #pumping = false
  #failed?: Error

  constructor (stream: Stream, init: TransferClientInit = {}) {
    this.stream = stream
    this.#timeoutMs = init.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS
    this.#lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES, maxBufferSize: init.maxBufferBytes ?? 4 * MAX_FRAME_BYTES })
  }

  get inFlight (): number {
    return this.#pending.length
  }

  async head (digest: string, signal?: AbortSignal): Promise<HeadReply> {
    const reply = await this.#request<TransferMessage>({ type: 'head', digest }, 'head', signal)
    if (reply.type !== 'head-reply') throw new ProtocolMessageError(`bundle-transfer: expected head-reply, got ${reply.type}`)
    return { size: reply.size, tailOffset: reply.tailOffset, midstate: Buffer.from(reply.midstate, 'hex'), tail: Buffer.from(reply.tail, 'base64') }
  }

  async have (digest: string, signal?: AbortSignal): Promise<HaveReply> {
    const reply = await this.#request<TransferMessage>({ type: 'have', digest }, 'have', signal)
    if (reply.type !== 'have-reply') throw new ProtocolMessageError(`bundle-transfer: expected have-reply, got ${reply.type}`)
    return reply.complete ? { complete: true } : { complete: false, bitmap: Buffer.from(reply.bitmap ?? '', 'base64') }
  }

  /** The bytes of chunk `index` as a list of buffers (no copy); not yet verified. */
  async chunk (digest: string, index: number, signal?: AbortSignal): Promise<Uint8ArrayList> {
    return await this.#request<Uint8ArrayList>({ type: 'get', digest, index }, 'chunk', signal, index)
  }

  /** End the stream: gracefully when nothing is pending, else abort. */
  async close (): Promise<void> {
    if (this.#pending.length > 0 || this.#failed != null) {
      this.abort(new ProtocolMessageError('bundle-transfer: closed with requests in flight'))
      return
    }
    await this.stream.close({ signal: AbortSignal.timeout(2000) }).catch(err => { this.stream.abort(err) })
  }

  abort (err: Error): void {
    this.#fail(err)
    this.stream.abort(err)
  }

  async #request<T> (message: TransferMessage, kind: Pending['kind'], signal?: AbortSignal, index = -1): Promise<T> {
    if (this.#failed != null) throw this.#failed
    const result = new Promise<T>((resolve, reject) => {
      this.#pending.push(kind === 'chunk'
        ? { kind, index, resolve: resolve as (d: Uint8ArrayList) => void, reject }
        : { kind, resolve: resolve as (m: TransferMessage) => void, reject })
    })
    const onAbort = (): void => { this.abort(signal?.reason ?? new Error('aborted')) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await this.#lp.write(transferCodec.encode(message), { signal: timeoutSignal(this.#timeoutMs, signal) })
    } catch (err: any) {
      this.abort(err)
    }
    this.#pump()
    try {
      return await result
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  #pump (): void {
    if (this.#pumping) return
    this.#pumping = true
    void (async () => {
      // the request whose reply is being read: failed with the stream when that reply is bad
      let next: Pending | undefined
      try {
        while (this.#pending.length > 0 && this.#failed == null) {
          const frame = await this.#lp.read({ signal: AbortSignal.timeout(this.#timeoutMs) })
          checkFrameSize(frame.byteLength)
          next = this.#pending.shift()!
          if (frameKind(frame.byteLength === 0 ? undefined : frame.get(0)) === 'json') {
            const msg = transferCodec.decode(frame.subarray())
            if (msg.type === 'error') {
              next.reject(new TransferRefusedError(msg.code, `provider refused: ${msg.code}: ${msg.message}`))
            } else if (next.kind === 'chunk') {
              throw new ProtocolMessageError(`bundle-transfer: expected chunk ${next.index}, got ${msg.type}`)
            } else {
              next.resolve(msg)
            }
            next = undefined
            continue
          }
          if (next.kind !== 'chunk') throw new ProtocolMessageError('bundle-transfer: unexpected chunk frame')
          if (frame.byteLength < CHUNK_HEADER_BYTES) throw new MalformedMessageError(`bundle-transfer: chunk frame of ${frame.byteLength} bytes is shorter than its header`)
          const index = frame.getUint32(1)
          if (index !== next.index) throw new ProtocolMessageError(`bundle-transfer: expected chunk ${next.index}, got ${index}`)
          frame.consume(CHUNK_HEADER_BYTES)
          next.resolve(frame)
          next = undefined
        }
      } catch (err: any) {
        next?.reject(err)
        this.abort(err)
      } finally {
        this.#pumping = false
      }
    })()
  }

  #fail (err: Error): void {
    this.#failed ??= err
    for (const p of this.#pending.splice(0)) p.reject(err)
  }
}
