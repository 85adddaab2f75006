import { createHash } from 'node:crypto'
import { CorruptArchiveError, HashMismatchError } from './errors.ts'

/**
 * The chunk index: the sha256 of every fixed-size chunk of the zip, kept in
 * the zip's own archive comment. The comment is the last thing in a zip, so
 * the index covers every byte before it (`covered` bytes) and is itself
 * covered by the bundle digest, the sha256 of the whole zip. A receiver
 * learns it by fetching the zip's tail together with the SHA-256 chaining
 * value at the tail's start (see sha256-midstate.ts) and checking that the
 * two finish to the digest; from then on every chunk is checked on arrival.
 *
 * Format (ASCII, canonical, so no two spellings exist):
 *   `GMCHUNKS1 <chunkSize> <covered> <hex sha256 of chunk 0><hex of chunk 1>…`
 */
export const INDEX_MAGIC = 'GMCHUNKS1 '
export const MIN_CHUNK_SIZE = 1024 * 1024
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024
/** Most chunks one index lists: keeps the comment under the zip limit of 65,535 bytes. */
export const MAX_CHUNKS = 1000
/** Largest zip comment we write or accept. */
export const MAX_COMMENT_BYTES = 65_535

const INDEX_RE = /^GMCHUNKS1 ([1-9][0-9]{0,9}) ([1-9][0-9]{0,15}) ((?:[0-9a-f]{64})+)$/

export interface ChunkIndex {
  chunkSize: number
  /** bytes of the zip before the comment; chunks tile exactly this range */
  covered: number
  /** lowercase hex sha256 of each chunk */
  hashes: string[]
}

/** Smallest power-of-two chunk size ≥ 1 MiB that keeps the index within MAX_CHUNKS. */
export function chunkSizeFor (covered: number): number {
  let size = MIN_CHUNK_SIZE
  while (Math.ceil(covered / size) > MAX_CHUNKS) size *= 2
  if (size > MAX_CHUNK_SIZE) throw new CorruptArchiveError(`a bundle of ${covered} bytes is larger than ${MAX_CHUNKS} chunks of ${MAX_CHUNK_SIZE} bytes`)
  return size
}

export function chunkCount (index: Pick<ChunkIndex, 'chunkSize' | 'covered'>): number {
  return Math.ceil(index.covered / index.chunkSize)
}

/** Byte range `[start, end)` of chunk `i`. */
export function chunkRange (index: Pick<ChunkIndex, 'chunkSize' | 'covered'>, i: number): { start: number, end: number } {
  const start = i * index.chunkSize
  return { start, end: Math.min(start + index.chunkSize, index.covered) }
}

/** Length in bytes of the comment that an index over `covered` bytes needs. */
export function indexLength (covered: number, chunkSize = chunkSizeFor(covered)): number {
  return INDEX_MAGIC.length + String(chunkSize).length + 1 + String(covered).length + 1 + 64 * Math.ceil(covered / chunkSize)
}

export function formatIndex (index: ChunkIndex): string {
  return `${INDEX_MAGIC}${index.chunkSize} ${index.covered} ${index.hashes.join('')}`
}

/** Parse an index; `covered` must be where the comment starts in the zip. */
export function parseIndex (comment: string | Uint8Array, expectCovered?: number): ChunkIndex {
  const text = typeof comment === 'string' ? comment : Buffer.from(comment).toString('latin1')
  const m = INDEX_RE.exec(text)
  if (m == null) throw new CorruptArchiveError('not a gatemesh bundle: the zip comment is not a chunk index')
  const chunkSize = Number(m[1])
  const covered = Number(m[2])
  const hex = m[3]!
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new CorruptArchiveError(`chunk index: chunk size ${chunkSize} is not a power of two between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE}`)
  }
  const hashes: string[] = []
  for (let i = 0; i < hex.length; i += 64) hashes.push(hex.slice(i, i + 64))
  if (hashes.length !== Math.ceil(covered / chunkSize) || hashes.length > MAX_CHUNKS) {
    throw new CorruptArchiveError(`chunk index: ${hashes.length} hashes for ${covered} bytes in chunks of ${chunkSize}`)
  }
  if (expectCovered != null && covered !== expectCovered) {
    throw new CorruptArchiveError(`chunk index: covers ${covered} bytes but the comment starts at ${expectCovered}`)
  }
  return { chunkSize, covered, hashes }
}

/** Find and parse the index at the end of a zip's tail (the comment is the tail's last bytes). */
export function indexFromTail (tail: Uint8Array, tailOffset: number, size: number): ChunkIndex {
  const text = Buffer.from(tail).toString('latin1')
  const at = text.lastIndexOf(INDEX_MAGIC)
  if (at < 0) throw new CorruptArchiveError('not a gatemesh bundle: no chunk index at the end of the zip')
  return parseIndex(text.slice(at), tailOffset + at)
}

/**
 * Where a receiver's tail starts: the last 64-byte boundary at or before the
 * comment, so a SHA-256 chaining value exists there.
 */
export function tailOffsetOf (index: Pick<ChunkIndex, 'covered'>): number {
  return Math.floor(index.covered / 64) * 64
}

/** Check one chunk against the index; throws HashMismatchError naming the chunk. */
export function verifyChunk (index: ChunkIndex, i: number, data: Uint8Array | Uint8Array[]): void {
  const { start, end } = chunkRange(index, i)
  const parts = Array.isArray(data) ? data : [data]
  const hash = createHash('sha256')
  let size = 0
  for (const p of parts) {
    hash.update(p)
    size += p.byteLength
  }
  if (size !== end - start) throw new HashMismatchError(`chunk ${i}: ${size} bytes, expected ${end - start}`)
  if (hash.digest('hex') !== index.hashes[i]) throw new HashMismatchError(`chunk ${i}: sha256 does not match the chunk index`)
}
