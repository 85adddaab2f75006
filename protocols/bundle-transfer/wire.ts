import { Type, type Static } from '@sinclair/typebox'
import { JsonCodec } from '../codec.ts'
import { MalformedMessageError, MessageTooLargeError, UnsupportedVersionError } from '../errors.ts'

/**
 * `/gatemesh/bundle/1.0.0`: fetch a bundle by digest in verified chunks.
 *
 * One stream per provider; the requester pipelines requests and the provider
 * answers each in order. Every frame is length-prefixed; its first byte says
 * what it is: 1 = a JSON control message (versioned codec below), 0x81 = a
 * chunk: `[0x81][u32 index][bytes]`.
 *
 *   head {digest}          → head {size, tailOffset, midstate, tail}  (the zip's tail and the
 *                            SHA-256 chaining value at its start: they must finish to the digest)
 *   have {digest}          → have {complete, bitmap?}                 (partial holders serve what they verified)
 *   get  {digest, index}   → chunk frame
 *   any                    → error {code, message}
 */
export const BUNDLE_PROTOCOL = '/gatemesh/bundle/1.0.0'

export const CHUNK_FRAME = 0x81
export const CHUNK_HEADER_BYTES = 5
/** Largest chunk a bundle index may declare (packaging/bundle MAX_CHUNK_SIZE). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024
/** Largest frame of any kind: a chunk and its header. */
export const MAX_FRAME_BYTES = MAX_CHUNK_BYTES + CHUNK_HEADER_BYTES
/** The zip tail a head carries: the chunk index comment (< 64 KiB) plus < 64 bytes. */
export const MAX_TAIL_BYTES = 65_535 + 64

const Digest = Type.String({ pattern: '^[0-9a-f]{64}$' })

export const TransferMessageSchema = Type.Union([
  Type.Object({ type: Type.Literal('head'), digest: Digest }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('have'), digest: Digest }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('get'), digest: Digest, index: Type.Integer({ minimum: 0, maximum: 100_000 }) }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('head-reply'),
    size: Type.Integer({ minimum: 1, maximum: 2 ** 44 }),
    tailOffset: Type.Integer({ minimum: 0, maximum: 2 ** 44 }),
    midstate: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    /** base64 */
    tail: Type.String({ minLength: 1, maxLength: Math.ceil(MAX_TAIL_BYTES / 3) * 4 })
  }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('have-reply'),
    complete: Type.Boolean(),
    /** base64 bitmap of verified chunks, bit i of byte i>>3 (LSB first); absent when complete */
    bitmap: Type.Optional(Type.String({ maxLength: 1024 * 1024 }))
  }, { additionalProperties: false }),
  Type.Object({
    type: Type.Literal('error'),
    code: Type.Union([Type.Literal('NOT_HELD'), Type.Literal('CHUNK_MISSING'), Type.Literal('BAD_REQUEST'), Type.Literal('INTERNAL')]),
    message: Type.String({ maxLength: 1024 })
  }, { additionalProperties: false })
])

export type TransferMessage = Static<typeof TransferMessageSchema>

export const transferCodec = new JsonCodec({ name: 'bundle-transfer', version: 1, schema: TransferMessageSchema, maxBytes: 256 * 1024 })

/** The header of a chunk frame; the chunk bytes follow it in the same frame. */
export function chunkHeader (index: number): Uint8Array {
  const header = new Uint8Array(CHUNK_HEADER_BYTES)
  header[0] = CHUNK_FRAME
  new DataView(header.buffer).setUint32(1, index)
  return header
}

/** What a frame is, by its first byte. */
export function frameKind (first: number | undefined): 'json' | 'chunk' {
  if (first === CHUNK_FRAME) return 'chunk'
  if (first === transferCodec.version) return 'json'
  if (first == null) throw new MalformedMessageError('bundle-transfer: empty frame')
  throw new UnsupportedVersionError(`bundle-transfer: frame type ${first} is not supported`)
}

export function checkFrameSize (bytes: number): void {
  if (bytes > MAX_FRAME_BYTES) throw new MessageTooLargeError(`bundle-transfer: frame of ${bytes} bytes exceeds ${MAX_FRAME_BYTES}`)
}

/** Bitmaps of held chunks. */
export function bitmapFrom (have: ArrayLike<boolean>): string {
  const bytes = new Uint8Array(Math.ceil(have.length / 8))
  for (let i = 0; i < have.length; i++) if (have[i] === true) bytes[i >> 3]! |= 1 << (i & 7)
  return Buffer.from(bytes).toString('base64')
}

export function bitmapHas (bitmap: Uint8Array, i: number): boolean {
  return ((bitmap[i >> 3] ?? 0) & (1 << (i & 7))) !== 0
}
