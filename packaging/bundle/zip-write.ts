import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { open, rename, rm } from 'node:fs/promises'
import { pipeline } from 'node:stream/promises'
import yazl from 'yazl'
import { chunkSizeFor, formatIndex, indexLength, type ChunkIndex } from './chunk-index.ts'
import { CorruptArchiveError } from './errors.ts'

/** One file to put in a bundle zip: bytes in memory or a file on disk. */
export interface ZipSource {
  path: string
  data?: Uint8Array
  file?: string
  /** deflate this entry. @default text files (json, js, …) only */
  compress?: boolean
}

export interface WrittenZip {
  /** sha256 of the zip bytes, lowercase hex: the bundle id */
  digest: string
  size: number
  index: ChunkIndex
}

const EOCD_SIGNATURE = 0x06054b50
const EOCD_SIZE = 22
const READ_BLOCK = 4 * 1024 * 1024
/** Text compresses well; weights barely do, and storing them keeps unpacking cheap. */
const COMPRESSED = /\.(json|js|mjs|cjs|txt|md|csv)$/i

/**
 * Write a bundle zip: entries in the given order with a fixed timestamp and
 * mode (the same inputs always give the same bytes), then the chunk index as
 * the archive comment. The file appears at `out` only once complete.
 */
export async function writeBundleZip (entries: ZipSource[], out: string, mtime: Date): Promise<WrittenZip> {
  const tmp = `${out}.${process.pid}.tmp`
  try {
    const zip = new yazl.ZipFile()
    for (const e of entries) {
      const options = { mtime, mode: 0o100644, compress: e.compress ?? COMPRESSED.test(e.path) }
      if (e.data != null) zip.addBuffer(Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength), e.path, options)
      else if (e.file != null) zip.addFile(e.file, e.path, options)
      else throw new TypeError(`${e.path}: no data and no file`)
    }
    zip.end()
    await pipeline(zip.outputStream, createWriteStream(tmp, { mode: 0o644 }))
    const written = await appendChunkIndex(tmp)
    await rename(tmp, out)
    return written
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

/**
 * Turn a zip with an empty comment into a bundle zip: set the comment length
 * in the end-of-central-directory record, hash every chunk before the
 * comment, and append the index. Only the comment length field changes in the
 * bytes already written, and it is known before hashing since the index
 * length depends only on the covered size.
 */
export async function appendChunkIndex (path: string): Promise<WrittenZip> {
  const fh = await open(path, 'r+')
  try {
    const { size: covered } = await fh.stat()
    const eocd = Buffer.alloc(EOCD_SIZE)
    await fh.read(eocd, 0, EOCD_SIZE, covered - EOCD_SIZE)
    if (eocd.readUInt32LE(0) !== EOCD_SIGNATURE || eocd.readUInt16LE(20) !== 0) {
      throw new CorruptArchiveError('zip writer did not end with an empty-comment end record')
    }
    const chunkSize = chunkSizeFor(covered)
    const commentLength = indexLength(covered, chunkSize)
    const lengthField = Buffer.alloc(2)
    lengthField.writeUInt16LE(commentLength)
    await fh.write(lengthField, 0, 2, covered - 2)

    const whole = createHash('sha256')
    const hashes: string[] = []
    const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, chunkSize))
    for (let start = 0; start < covered; start += chunkSize) {
      const end = Math.min(start + chunkSize, covered)
      const chunk = createHash('sha256')
      for (let pos = start; pos < end;) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.byteLength, end - pos), pos)
        if (bytesRead === 0) throw new CorruptArchiveError('zip shrank while hashing')
        const part = buf.subarray(0, bytesRead)
        chunk.update(part)
        whole.update(part)
        pos += bytesRead
      }
      hashes.push(chunk.digest('hex'))
    }
    const index: ChunkIndex = { chunkSize, covered, hashes }
    const comment = Buffer.from(formatIndex(index), 'latin1')
    if (comment.byteLength !== commentLength) throw new CorruptArchiveError('chunk index length mismatch')
    await fh.write(comment, 0, comment.byteLength, covered)
    whole.update(comment)
    return { digest: whole.digest('hex'), size: covered + comment.byteLength, index }
  } finally {
    await fh.close()
  }
}
