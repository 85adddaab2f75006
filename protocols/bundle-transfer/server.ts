import { lpStream } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { ProtocolMessageError } from '../errors.ts'
import { timeoutSignal } from '../stream.ts'
import { bitmapFrom, chunkHeader, frameKind, transferCodec, type TransferMessage } from './wire.ts'
import type { Stream } from '@libp2p/interface'

/** What a provider serves from. Every method may throw; the requester gets an error reply. */
export interface TransferSource {
  /** The zip's size, tail and the chaining value at the tail's start; undefined when not held. */
  head(digest: string): Promise<{ size: number, tailOffset: number, midstate: Uint8Array, tail: Uint8Array } | undefined>
  /** Which chunks are held: all, some (verified ones), or undefined when none. */
  have(digest: string): { complete: true } | { complete: false, chunks: ArrayLike<boolean> } | undefined
  /** The bytes of one held chunk; undefined when not held. */
  chunk(digest: string, index: number): Promise<Uint8Array | undefined>
  /** Called before a chunk is sent, e.g. to enforce an upload rate. */
  beforeSend?(bytes: number, signal: AbortSignal): Promise<void>
  /** Called after a chunk was sent. */
  sent?(bytes: number): void
}

export interface ServeOptions {
  /** A requester silent this long is dropped. @default 30_000 */
  idleTimeoutMs?: number
  /** Writing one reply may take this long (the requester reads slowly). @default 60_000 */
  writeTimeoutMs?: number
  signal?: AbortSignal
}

/**
 * The providing side: answer requests in order until the requester closes.
 * A malformed request ends the stream; a request for something not held gets
 * an error reply and the stream stays usable.
 */
export async function serveTransfer (stream: Stream, source: TransferSource, options: ServeOptions = {}): Promise<{ chunks: number, bytes: number }> {
  const lp = lpStream(stream, { maxDataLength: transferCodec.maxBytes, maxBufferSize: 64 * transferCodec.maxBytes })
  const idle = options.idleTimeoutMs ?? 30_000
  const writeTimeout = options.writeTimeoutMs ?? 60_000
  let chunks = 0
  let bytes = 0
  const reply = async (msg: TransferMessage | Uint8ArrayList): Promise<void> => {
    await lp.write(msg instanceof Uint8ArrayList ? msg : transferCodec.encode(msg), { signal: timeoutSignal(writeTimeout, options.signal) })
  }
  try {
    while (true) {
      let frame: Uint8ArrayList
      try {
        frame = await lp.read({ signal: timeoutSignal(idle, options.signal) })
      } catch (err: any) {
        // the requester closed its side: done
        if (err?.name === 'UnexpectedEOFError' && stream.readStatus !== 'readable') break
        throw err
      }
      if (frameKind(frame.byteLength === 0 ? undefined : frame.get(0)) !== 'json') throw new ProtocolMessageError('bundle-transfer: requests must be JSON frames')
      const msg = transferCodec.decode(frame.subarray())
      if (msg.type === 'head') {
        const head = await source.head(msg.digest)
        await reply(head == null
          ? { type: 'error', code: 'NOT_HELD', message: `bundle ${msg.digest} is not held here` }
          : { type: 'head-reply', size: head.size, tailOffset: head.tailOffset, midstate: Buffer.from(head.midstate).toString('hex'), tail: Buffer.from(head.tail).toString('base64') })
      } else if (msg.type === 'have') {
        const have = source.have(msg.digest)
        await reply(have == null
          ? { type: 'error', code: 'NOT_HELD', message: `bundle ${msg.digest} is not held here` }
          : have.complete ? { type: 'have-reply', complete: true } : { type: 'have-reply', complete: false, bitmap: bitmapFrom(have.chunks) })
      } else if (msg.type === 'get') {
        const data = await source.chunk(msg.digest, msg.index)
        if (data == null) {
          await reply({ type: 'error', code: 'CHUNK_MISSING', message: `chunk ${msg.index} of ${msg.digest} is not held here` })
          continue
        }
        await source.beforeSend?.(data.byteLength, timeoutSignal(writeTimeout, options.signal))
        await reply(new Uint8ArrayList(chunkHeader(msg.index), data))
        source.sent?.(data.byteLength)
        chunks++
        bytes += data.byteLength
      } else {
        throw new ProtocolMessageError(`bundle-transfer: ${msg.type} is a reply, not a request`)
      }
    }
    await stream.close({ signal: AbortSignal.timeout(2000) }).catch(() => {})
    return { chunks, bytes }
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
