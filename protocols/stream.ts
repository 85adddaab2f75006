import { lpStream } from '@libp2p/utils'
import type { JsonCodec } from './codec.ts'
import type { AbortOptions, Stream } from '@libp2p/interface'
import type { Static, TSchema } from '@sinclair/typebox'

/**
 * Typed, length-prefixed messages over one libp2p stream. The frame limit is
 * the codec's `maxBytes`, so an oversized length prefix fails the read before
 * the body is buffered.
 */
export interface MessageChannel<S extends TSchema> {
  read(options: AbortOptions): Promise<Static<S>>
  write(message: Static<S>, options: AbortOptions): Promise<void>
  /** Close the writing side; the reader sees end of stream. */
  close(options: AbortOptions): Promise<void>
  stream: Stream
}

export function messageChannel<S extends TSchema> (stream: Stream, codec: JsonCodec<S>): MessageChannel<S> {
  const lp = lpStream(stream, { maxDataLength: codec.maxBytes })
  return {
    stream,
    async read (options) {
      return codec.decode(await lp.read(options))
    },
    async write (message, options) {
      await lp.write(codec.encode(message), options)
    },
    async close (options) {
      await stream.close(options)
    }
  }
}

/** Like messageChannel, for protocols whose two directions carry different messages. */
export interface DuplexChannel<W extends TSchema, R extends TSchema> {
  read(options: AbortOptions): Promise<Static<R>>
  write(message: Static<W>, options: AbortOptions): Promise<void>
  close(options: AbortOptions): Promise<void>
  stream: Stream
}

export function duplexChannel<W extends TSchema, R extends TSchema> (stream: Stream, writeCodec: JsonCodec<W>, readCodec: JsonCodec<R>): DuplexChannel<W, R> {
  const lp = lpStream(stream, { maxDataLength: readCodec.maxBytes, maxBufferSize: readCodec.maxBytes + 16 })
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

/** A signal that aborts after `ms`, or earlier when `parent` aborts. */
export function timeoutSignal (ms: number, parent?: AbortSignal): AbortSignal {
  const timeout = AbortSignal.timeout(ms)
  return parent == null ? timeout : AbortSignal.any([timeout, parent])
}
