import { lpStream } from '@libp2p/utils'
import type { JsonCodec } from './codec.ts'
import type { AbortOptions, Stream } from '@libp2p/interface'
import type { Static, TSchema } from '@sinclair/typebox'

/**
 * Typed, length-prefixed messages over one libp2p stream, written with one
 * codec and read with another (the same one for most protocols). The frame
 * limit is the read codec's `maxBytes`, so an oversized length prefix fails
 * the read before the body is buffered.
 */
export interface DuplexChannel<W extends TSchema, R extends TSchema> {
  read(options: AbortOptions): Promise<Static<R>>
  write(message: Static<W>, options: AbortOptions): Promise<void>
  /** Close the writing side; the reader sees end of stream. */
  close(options: AbortOptions): Promise<void>
  stream: Stream
}

export type MessageChannel<S extends TSchema> = DuplexChannel<S, S>

/** lpStream's own default; a larger frame limit raises it so one whole frame fits. */
const DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024

export function duplexChannel<W extends TSchema, R extends TSchema> (stream: Stream, writeCodec: JsonCodec<W>, readCodec: JsonCodec<R>): DuplexChannel<W, R> {
  const lp = lpStream(stream, { maxDataLength: readCodec.maxBytes, maxBufferSize: Math.max(DEFAULT_BUFFER_BYTES, readCodec.maxBytes + 16) })
  return {
    stream,
    async read (options) {
      return readCodec.decode(await lp.read(options))
    },
    async write (message, options) {
      await lp.write(writeCodec.encode(message), options)
    },
    async close (options) {
      await stream.close(options)
    }
  }
}

export function messageChannel<S extends TSchema> (stream: Stream, codec: JsonCodec<S>): MessageChannel<S> {
  return duplexChannel(stream, codec, codec)
}

/** A signal that aborts after `ms`, or earlier when `parent` aborts. */
export function timeoutSignal (ms: number, parent?: AbortSignal): AbortSignal {
  const timeout = AbortSignal.timeout(ms)
  return parent == null ? timeout : AbortSignal.any([timeout, parent])
}
