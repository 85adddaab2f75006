import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import yauzl, { type Entry, type ZipFile } from 'yauzl'
import { BUNDLE_PATH_PATTERN } from '../manifest.ts'
import { chunkCount, chunkRange, parseIndex, type ChunkIndex } from './chunk-index.ts'
import {
  ArchiveLimitError, BundleError, CorruptArchiveError, DuplicateEntryError, HashMismatchError, InvalidEntryNameError,
  LinkEntryError, PathTraversalError, SizeMismatchError, UnsupportedEntryError
} from './errors.ts'
import type { Readable } from 'node:stream'

/** Limits on what one archive may expand to. */
export interface BundleLimits {
  /** Sum of the uncompressed sizes of all entries. @default DEFAULT_LIMITS.maxTotalBytes */
  maxTotalBytes: number
  /** @default DEFAULT_LIMITS.maxEntries */
  maxEntries: number
  /** Uncompressed ÷ compressed size of one entry, or of the whole archive. @default DEFAULT_LIMITS.maxCompressionRatio */
  maxCompressionRatio: number
  /** Entries smaller than this are exempt from the ratio check (tiny JSON files compress well). @default DEFAULT_LIMITS.ratioExemptBytes */
  ratioExemptBytes: number
}

export const DEFAULT_LIMITS: Readonly<BundleLimits> = {
  maxTotalBytes: 4 * 1024 ** 3,
  maxEntries: 10_002,
  maxCompressionRatio: 100,
  ratioExemptBytes: 1024 * 1024
}

/** An archive entry that passed the structural checks, by name. */
export interface CheckedEntry {
  name: string
  entry: Entry
  size: number
}

/** An open bundle archive whose bytes matched its chunk index and whose entries passed the structural checks. */
export interface OpenArchive {
  zip: ZipFile
  digest: string
  size: number
  index: ChunkIndex
  entries: Map<string, CheckedEntry>
}

const PATH_RE = new RegExp(BUNDLE_PATH_PATTERN)

/** What entry names an archive may hold (a RegExp, or any test). */
export interface NamePattern { test(name: string): boolean }
const S_IFMT = 0o170000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000
/** Info-ZIP Unicode Path: a second name other tools would extract to instead of ours. */
const UNICODE_PATH_FIELD = 0x7075
const READ_BLOCK = 4 * 1024 * 1024

export function resolveLimits (limits: Partial<BundleLimits> = {}): BundleLimits {
  return { ...DEFAULT_LIMITS, ...Object.fromEntries(Object.entries(limits).filter(([, v]) => v != null)) }
}

/**
 * What a pull already proved about a file it assembled: its chunk index
 * (learnt from a tail that, with the provider's SHA-256 midstate, hashed to
 * `digest`) and that every chunk it wrote hashed to that index on arrival.
 * Then the file is the one `digest` names (second-preimage resistance of
 * SHA-256, chunk by chunk), and hashing it again proves nothing new.
 */
export interface ProvenChunks {
  digest: string
  index: ChunkIndex
}

/**
 * Open a bundle zip (path or bytes), check every byte against its chunk
 * index and the digest (unless `proven` says a pull already did, for this
 * very index), and check every entry's name, type and declared size before
 * anything is decompressed. Throws a typed BundleError naming the entry at
 * fault.
 */
export async function openArchive (source: string | Uint8Array, limits: BundleLimits, expectDigest?: string, namePattern: NamePattern = PATH_RE, proven?: ProvenChunks): Promise<OpenArchive> {
  let zip: ZipFile
  const options = { lazyEntries: true, decodeStrings: false, validateEntrySizes: true, autoClose: false, strictFileNames: true }
  try {
    zip = typeof source === 'string'
      ? await yauzl.openPromise(source, options)
      : await yauzl.fromBufferPromise(Buffer.from(source.buffer, source.byteOffset, source.byteLength), options)
  } catch (err: any) {
    if (err?.code === 'ENOENT' || err?.code === 'EACCES') throw err
    throw new CorruptArchiveError(`not a readable zip: ${err.message}`, { cause: err })
  }
  try {
    const comment = zip.comment as unknown as Buffer
    const index = parseIndex(comment, zip.fileSize - comment.byteLength)
    const digest = proven == null ? await checkChunks(source, index, comment) : provenDigest(proven, index, zip.fileSize)
    if (expectDigest != null && digest !== expectDigest) {
      throw new HashMismatchError(`bundle digest is ${digest}, expected ${expectDigest}`)
    }
    const entries = await checkEntries(zip, limits, namePattern)
    return { zip, digest, size: zip.fileSize, index, entries }
  } catch (err) {
    zip.close()
    throw err
  }
}

/**
 * The digest a pull proved, once the file's own index is the one the pull
 * checked its chunks against (a file changed on disk since, e.g. by another
 * process, would show here or in the per-file hashes that follow).
 */
function provenDigest (proven: ProvenChunks, index: ChunkIndex, size: number): string {
  const same = proven.index.chunkSize === index.chunkSize && proven.index.covered === index.covered &&
    proven.index.hashes.length === index.hashes.length && proven.index.hashes.every((h, i) => h === index.hashes[i])
  if (!same || index.covered > size) throw new HashMismatchError('the chunk index on disk is not the one the pull verified its chunks against')
  return proven.digest
}

/** Hash every chunk and compare with the index; returns the sha256 of the whole zip. */
async function checkChunks (source: string | Uint8Array, index: ChunkIndex, comment: Uint8Array): Promise<string> {
  const whole = createHash('sha256')
  const fh = typeof source === 'string' ? await open(source, 'r') : undefined
  try {
    const buf = fh == null ? undefined : Buffer.allocUnsafe(Math.min(READ_BLOCK, index.chunkSize))
    for (let i = 0; i < chunkCount(index); i++) {
      const { start, end } = chunkRange(index, i)
      const chunk = createHash('sha256')
      for (let pos = start; pos < end;) {
        let part: Uint8Array
        if (fh == null) {
          part = (source as Uint8Array).subarray(pos, end)
        } else {
          const { bytesRead } = await fh.read(buf!, 0, Math.min(buf!.byteLength, end - pos), pos)
          if (bytesRead === 0) throw new CorruptArchiveError('archive is shorter than its chunk index')
          part = buf!.subarray(0, bytesRead)
        }
        chunk.update(part)
        whole.update(part)
        pos += part.byteLength
      }
      if (chunk.digest('hex') !== index.hashes[i]) {
        throw new HashMismatchError(`chunk ${i} (bytes ${start}-${end}) does not match the chunk index: the archive was altered`)
      }
    }
  } finally {
    await fh?.close()
  }
  whole.update(comment)
  return whole.digest('hex')
}

function describeName (raw: Buffer): string {
  return JSON.stringify(raw.toString('latin1')).slice(1, -1)
}

/** Structural checks on every entry, from the central directory alone. */
async function checkEntries (zip: ZipFile, limits: BundleLimits, namePattern: NamePattern): Promise<Map<string, CheckedEntry>> {
  if (zip.entryCount > limits.maxEntries) {
    throw new ArchiveLimitError(`archive has ${zip.entryCount} entries, more than the limit of ${limits.maxEntries}`, 'maxEntries')
  }
  const entries = new Map<string, CheckedEntry>()
  const folded = new Set<string>()
  let total = 0
  let compressed = 0
  try {
    for await (const entry of zip.eachEntry()) {
      const raw = entry.fileNameRaw
      const name = describeName(raw)
      checkName(raw, name, namePattern)
      checkType(entry, name)
      if (entries.has(name) || folded.has(name.toLowerCase())) {
        throw new DuplicateEntryError(`${name}: appears more than once in the archive`, { entry: name })
      }
      if (entry.isEncrypted()) throw new UnsupportedEntryError(`${name}: encrypted entries are not supported`, { entry: name })
      if (entry.compressionMethod !== 0 && entry.compressionMethod !== 8) {
        throw new UnsupportedEntryError(`${name}: compression method ${entry.compressionMethod} is not supported`, { entry: name })
      }
      if (entry.extraFields.some(f => f.id === UNICODE_PATH_FIELD)) {
        throw new UnsupportedEntryError(`${name}: carries a second (Unicode) file name`, { entry: name })
      }
      total += entry.uncompressedSize
      compressed += entry.compressedSize
      if (total > limits.maxTotalBytes) {
        throw new ArchiveLimitError(`${name}: archive expands to more than the limit of ${limits.maxTotalBytes} bytes`, 'maxTotalBytes', { entry: name })
      }
      if (entry.uncompressedSize > limits.ratioExemptBytes && entry.uncompressedSize > limits.maxCompressionRatio * entry.compressedSize) {
        throw new ArchiveLimitError(`${name}: compression ratio ${(entry.uncompressedSize / Math.max(1, entry.compressedSize)).toFixed(0)}:1 exceeds the limit of ${limits.maxCompressionRatio}:1`, 'maxCompressionRatio', { entry: name })
      }
      entries.set(name, { name, entry, size: entry.uncompressedSize })
      folded.add(name.toLowerCase())
    }
  } catch (err: any) {
    if (err instanceof BundleError) throw err
    throw new CorruptArchiveError(`central directory is unreadable: ${err.message}`, { cause: err })
  }
  if (total > limits.ratioExemptBytes && total > limits.maxCompressionRatio * compressed) {
    throw new ArchiveLimitError(`archive compression ratio ${(total / Math.max(1, compressed)).toFixed(0)}:1 exceeds the limit of ${limits.maxCompressionRatio}:1`, 'maxCompressionRatio')
  }
  return entries
}

function checkName (raw: Buffer, name: string, namePattern: NamePattern): void {
  const text = raw.toString('latin1')
  const segments = text.split(/[/\\]/)
  if (text.startsWith('/') || text.startsWith('\\') || /^[A-Za-z]:/.test(text) || segments.includes('..')) {
    throw new PathTraversalError(`${name}: path escapes the bundle directory`, { entry: name })
  }
  if (text.endsWith('/')) throw new InvalidEntryNameError(`${name}: directory entries are not allowed`, { entry: name })
  if (!namePattern.test(text)) {
    throw new InvalidEntryNameError(`${name}: name must be a relative path of letters, digits and ${namePattern === PATH_RE ? '._-/' : 'the punctuation its kind of bundle allows'} without empty or dot segments`, { entry: name })
  }
}

function checkType (entry: Entry, name: string): void {
  const mode = (entry.externalFileAttributes >>> 16) & 0xffff
  const type = mode & S_IFMT
  if (type === S_IFLNK) throw new LinkEntryError(`${name}: symbolic links are not allowed`, { entry: name })
  if (type !== 0 && type !== S_IFREG) throw new LinkEntryError(`${name}: not a regular file (mode ${mode.toString(8)})`, { entry: name })
  // MS-DOS attribute bits: 0x10 directory
  if ((entry.externalFileAttributes & 0x10) !== 0) throw new InvalidEntryNameError(`${name}: directory entries are not allowed`, { entry: name })
}

/**
 * Stream one entry's bytes to `onData`, never more than `expectSize` (the
 * manifest's word), and return its sha256. Zip-level size lies surface as
 * SizeMismatchError naming the entry.
 */
export async function readEntry (zip: ZipFile, checked: CheckedEntry, expectSize: number, onData?: (chunk: Buffer) => Promise<void> | void): Promise<string> {
  const { name, entry } = checked
  if (entry.uncompressedSize !== expectSize) {
    throw new SizeMismatchError(`${name}: archive says ${entry.uncompressedSize} bytes, manifest says ${expectSize}`, { entry: name })
  }
  let stream: Readable
  try {
    stream = await zip.openReadStreamPromise(entry)
  } catch (err: any) {
    throw new CorruptArchiveError(`${name}: cannot read entry: ${err.message}`, { cause: err, entry: name })
  }
  const hash = createHash('sha256')
  let size = 0
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      size += chunk.byteLength
      if (size > expectSize) throw new SizeMismatchError(`${name}: expands past the ${expectSize} bytes the manifest lists`, { entry: name })
      hash.update(chunk)
      if (onData != null) await onData(chunk)
    }
  } catch (err: any) {
    stream.destroy()
    if (err instanceof BundleError) throw err
    if (/bytes in the stream/.test(err?.message ?? '')) throw new SizeMismatchError(`${name}: ${err.message}`, { cause: err, entry: name })
    throw new CorruptArchiveError(`${name}: cannot decompress: ${err.message}`, { cause: err, entry: name })
  }
  if (size !== expectSize) throw new SizeMismatchError(`${name}: ${size} bytes, manifest says ${expectSize}`, { entry: name })
  return hash.digest('hex')
}

/** Read a small entry whole (manifest, signature), bounded by `maxBytes`. */
export async function readSmallEntry (zip: ZipFile, checked: CheckedEntry, maxBytes: number): Promise<Buffer> {
  if (checked.size > maxBytes) {
    throw new ArchiveLimitError(`${checked.name}: ${checked.size} bytes is more than the ${maxBytes} allowed`, 'maxEntryBytes', { entry: checked.name })
  }
  const parts: Buffer[] = []
  await readEntry(zip, checked, checked.size, chunk => { parts.push(chunk) })
  return Buffer.concat(parts)
}
