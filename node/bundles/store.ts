import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat, statfs, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { chunkCount, chunkRange, ResumableSha256, tailOffsetOf, type ChunkIndex } from '../../packaging/bundle/index.ts'
import { InsufficientSpaceError } from '../store/errors.ts'
import type { VerifiedAnyBundle } from '../../packaging/release/verify.ts'
import type { Database } from '../store/db.ts'

/** Free space a new download leaves for the database and logs. */
export const SPACE_RESERVE_BYTES = 16 * 1024 * 1024

/** One bundle the agent holds, whole or in part. Kept in level under `bundles/<digest>`. */
export interface BundleRecord {
  digest: string
  size: number
  state: 'complete' | 'partial'
  index: ChunkIndex
  /** where a receiver's tail starts, and the SHA-256 chaining value there (hex) */
  tailOffset: number
  midstate: string
  name?: string
  version?: string
  publisher?: string
  /** a model bundle, or an agent release (packaging/release); unknown while partial */
  kind?: 'model' | 'release'
  /** partial only: base64 bitmap of verified chunks */
  have?: string
  storedAt: number
  lastUsedAt: number
}

/**
 * Content-addressed bundle files under `<dataDir>/bundles`: `<digest>.zip`
 * when complete, `partial/<digest>.part` (full size, chunks written in
 * place) while a transfer runs. The records live in a level sublevel so a
 * restarted agent knows what it holds and how far each transfer got.
 */
export class BundleStore {
  readonly dir: string
  readonly #db
  readonly #records = new Map<string, BundleRecord>()
  readonly #handles = new Map<string, Promise<FileHandle>>()

  constructor (dataDir: string, db: Database) {
    this.dir = join(dataDir, 'bundles')
    this.#db = db.sublevel<string, BundleRecord>('bundles', { valueEncoding: 'json' })
  }

  async open (): Promise<void> {
    await mkdir(join(this.dir, 'partial'), { recursive: true, mode: 0o755 })
    for (const r of await this.#db.values().all()) {
      const path = this.pathOf(r)
      // a record whose file is gone (deleted by hand, lost on a crash before the rename) is forgotten
      if (await stat(path).then(s => s.size === r.size, () => false)) this.#records.set(r.digest, r)
      else await this.#db.del(r.digest)
    }
    // leftovers of interrupted publishes or of records just dropped
    for (const dir of [this.dir, join(this.dir, 'partial')]) {
      for (const name of await readdir(dir)) {
        const digest = name.split('.')[0] ?? ''
        if (name === 'partial' || (this.#records.has(digest) && (name.endsWith('.zip') || name.endsWith('.part')))) continue
        await rm(join(dir, name), { force: true, recursive: true })
      }
    }
  }

  async close (): Promise<void> {
    for (const h of this.#handles.values()) await (await h).close().catch(() => {})
    this.#handles.clear()
  }

  get (digest: string): BundleRecord | undefined {
    return this.#records.get(digest)
  }

  list (): BundleRecord[] {
    return [...this.#records.values()].sort((a, b) => a.storedAt - b.storedAt)
  }

  /** Bytes on disk, complete and partial. */
  usedBytes (): number {
    let total = 0
    for (const r of this.#records.values()) total += r.size
    return total
  }

  pathOf (r: Pick<BundleRecord, 'digest' | 'state'>): string {
    return r.state === 'complete' ? join(this.dir, `${r.digest}.zip`) : join(this.dir, 'partial', `${r.digest}.part`)
  }

  /** A temp path inside the store (same file system, so adding is a rename). */
  tempPath (what: string): string {
    return join(this.dir, `${what}.${process.pid}.${Date.now()}.tmp`)
  }

  /** Move a verified bundle file into the store. */
  async addComplete (file: string, verified: VerifiedAnyBundle): Promise<BundleRecord> {
    const tailOffset = tailOffsetOf(verified.index)
    const midstate = await midstateOf(file, tailOffset)
    const now = Date.now()
    const record: BundleRecord = {
      digest: verified.digest,
      size: verified.size,
      state: 'complete',
      index: verified.index,
      tailOffset,
      midstate: Buffer.from(midstate).toString('hex'),
      name: verified.manifest.name,
      version: verified.manifest.version,
      publisher: verified.signer,
      kind: verified.kind,
      storedAt: now,
      lastUsedAt: now
    }
    await rename(file, this.pathOf(record))
    await this.#put(record)
    return record
  }

  /**
   * Start a partial file: full size, with the verified tail already in
   * place. A bundle that would not fit in the free space (with a reserve
   * for the database and logs) is refused before a byte is written, rather
   * than filling the disk part-way.
   */
  async createPartial (digest: string, head: { size: number, tailOffset: number, midstate: Uint8Array, tail: Uint8Array }, index: ChunkIndex): Promise<BundleRecord> {
    const fs = await statfs(this.dir)
    const free = fs.bavail * fs.bsize
    if (free < head.size + SPACE_RESERVE_BYTES) {
      throw new InsufficientSpaceError(`bundle ${digest} needs ${head.size} bytes plus a reserve of ${SPACE_RESERVE_BYTES}; ${free} are free on ${this.dir}`, this.dir)
    }
    const now = Date.now()
    const record: BundleRecord = {
      digest,
      size: head.size,
      state: 'partial',
      index,
      tailOffset: head.tailOffset,
      midstate: Buffer.from(head.midstate).toString('hex'),
      have: Buffer.alloc(Math.ceil(chunkCount(index) / 8)).toString('base64'),
      storedAt: now,
      lastUsedAt: now
    }
    const fh = await open(this.pathOf(record), 'w+', 0o644)
    try {
      await fh.truncate(head.size)
      await fh.write(head.tail, 0, head.tail.byteLength, head.tailOffset)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await this.#put(record)
    return record
  }

  /** Persist which chunks of a partial bundle are verified on disk. */
  async saveProgress (digest: string, have: Uint8Array): Promise<void> {
    const r = this.#records.get(digest)
    if (r == null || r.state !== 'partial') return
    r.have = Buffer.from(have).toString('base64')
    await this.#put(r)
  }

  /** A partial bundle whose whole file verified becomes a complete one. */
  async completePartial (digest: string, verified: VerifiedAnyBundle): Promise<BundleRecord> {
    const r = this.#records.get(digest)
    if (r == null || r.state !== 'partial') throw new Error(`${digest} is not a partial bundle`)
    await this.#closeHandle(digest)
    const complete: BundleRecord = { ...r, state: 'complete', name: verified.manifest.name, version: verified.manifest.version, publisher: verified.signer, kind: verified.kind, lastUsedAt: Date.now() }
    delete complete.have
    await rename(this.pathOf(r), this.pathOf(complete))
    await this.#put(complete)
    return complete
  }

  async remove (digest: string): Promise<void> {
    const r = this.#records.get(digest)
    if (r == null) return
    await this.#closeHandle(digest)
    this.#records.delete(digest)
    await this.#db.del(digest)
    await rm(this.pathOf(r), { force: true })
  }

  touch (digest: string): void {
    const r = this.#records.get(digest)
    if (r != null) r.lastUsedAt = Date.now()
  }

  /** A shared read/write handle on the bundle's file (complete or partial). */
  async handle (digest: string): Promise<FileHandle> {
    let h = this.#handles.get(digest)
    if (h == null) {
      const r = this.#records.get(digest)
      if (r == null) throw new Error(`${digest} is not held`)
      h = open(this.pathOf(r), r.state === 'partial' ? 'r+' : 'r')
      this.#handles.set(digest, h)
      h.catch(() => this.#handles.delete(digest))
    }
    return await h
  }

  /** Read bytes `[start, end)` of a held bundle. */
  async read (digest: string, start: number, end: number): Promise<Buffer> {
    const fh = await this.handle(digest)
    const buf = Buffer.allocUnsafe(end - start)
    let done = 0
    while (done < buf.byteLength) {
      const { bytesRead } = await fh.read(buf, done, buf.byteLength - done, start + done)
      if (bytesRead === 0) throw new Error(`${digest}: file ends before byte ${start + done}`)
      done += bytesRead
    }
    return buf
  }

  async readChunk (r: BundleRecord, i: number): Promise<Buffer> {
    const { start, end } = chunkRange(r.index, i)
    return await this.read(r.digest, start, end)
  }

  async #closeHandle (digest: string): Promise<void> {
    const h = this.#handles.get(digest)
    this.#handles.delete(digest)
    if (h != null) await (await h).close().catch(() => {})
  }

  async #put (r: BundleRecord): Promise<void> {
    this.#records.set(r.digest, r)
    await this.#db.put(r.digest, r)
  }
}

/** The SHA-256 chaining value after the first `length` bytes of a file (a multiple of 64). */
export async function midstateOf (file: string, length: number): Promise<Uint8Array> {
  const h = new ResumableSha256()
  if (length > 0) {
    for await (const chunk of createReadStream(file, { start: 0, end: length - 1, highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer)
  }
  if (h.bytesHashed !== length) throw new Error(`${file} is shorter than ${length} bytes`)
  return h.midstate()
}
