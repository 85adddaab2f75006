import { statfs } from 'node:fs/promises'
import { TypedEventEmitter } from '@libp2p/interface'
import { DiskFullError } from './errors.ts'
import type { Logger } from 'pino'

export const DEFAULT_PROBE_INTERVAL_MS = 5_000
/** Enough for LevelDB to reopen (a new log, a flushed memtable) and the log file to take lines again. */
export const DEFAULT_RESUME_FREE_BYTES = 8 * 1024 * 1024

export interface DiskGuardInit {
  /** How often free space is looked at while the disk is full. @default DEFAULT_PROBE_INTERVAL_MS */
  probeIntervalMs?: number
  /** Free bytes the data dir's file system needs before writing resumes. @default DEFAULT_RESUME_FREE_BYTES */
  resumeFreeBytes?: number
}

export interface DiskGuardComponents {
  /** The data dir; its file system is the one watched. */
  dataDir: string
  logger?: Logger
  /** Free bytes for an unprivileged writer on `path`'s file system. @default statfs */
  freeBytes?: (path: string) => Promise<number>
  metrics?: { diskFull(full: boolean): void }
}

/** What status pages show. */
export interface DiskState {
  full: boolean
  /** ms since epoch the disk was found full */
  since?: number
  /** the file whose write failed */
  path?: string
  /** writes refused since then */
  refused?: number
}

/** Before writing resumes, e.g. reopening a database that a failed flush left read-only. */
export type ResumeHook = () => Promise<void>

const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'ERR_DISK_FULL'])
// LevelDB reports only its Status text ("IO error: <file>: No space left on device"), no errno
const LEVEL_DISK_FULL = /: (No space left on device|Disk quota exceeded)$/
const LEVEL_PATH = /^IO error: (.+): (No space left on device|Disk quota exceeded)$/

/** Whether `err` (or what caused it) says the disk is full. */
export function isDiskFull (err: unknown): boolean {
  let e = err as { code?: unknown, message?: unknown, cause?: unknown } | undefined
  for (let depth = 0; depth < 4 && e != null && typeof e === 'object'; depth++) {
    if (typeof e.code === 'string' && DISK_FULL_CODES.has(e.code)) return true
    if (e.code === 'LEVEL_IO_ERROR' && typeof e.message === 'string' && LEVEL_DISK_FULL.test(e.message)) return true
    e = e.cause as typeof e
  }
  return false
}

function pathOf (err: unknown): string | undefined {
  let e = err as { path?: unknown, message?: unknown, cause?: unknown } | undefined
  for (let depth = 0; depth < 4 && e != null && typeof e === 'object'; depth++) {
    if (typeof e.path === 'string') return e.path
    const m = typeof e.message === 'string' ? LEVEL_PATH.exec(e.message) : null
    if (m != null) return m[1]
    e = e.cause as typeof e
  }
  return undefined
}

async function statfsFree (path: string): Promise<number> {
  const s = await statfs(path)
  // out of inodes is as full as out of blocks (ENOSPC either way)
  if (s.files > 0 && s.ffree === 0) return 0
  return s.bavail * s.bsize
}

/**
 * One watch over the disk that holds an agent's data dir. The first write
 * that fails for want of space (LevelDB, the log file, a bundle download)
 * switches it to full: that is logged once, at error, with the path; from
 * then on writers are refused at once with DiskFullError (nothing touches
 * the disk) and keep what they must in memory, while everything that reads
 * goes on. Every `probeIntervalMs` it looks at the free space; once there is
 * enough, the resume hooks run (databases reopen) and `resume` is emitted,
 * so writers flush what they held. It never exits the process.
 */
export class DiskGuard extends TypedEventEmitter<{ full: CustomEvent<DiskState>, resume: CustomEvent<DiskState> }> {
  readonly dataDir: string
  readonly #probeIntervalMs: number
  readonly #resumeFreeBytes: number
  readonly #freeBytes: (path: string) => Promise<number>
  readonly #metrics?: DiskGuardComponents['metrics']
  readonly #hooks: ResumeHook[] = []
  #logger?: Logger
  #state: DiskState = { full: false }
  #timer?: NodeJS.Timeout
  #closed = false

  constructor (components: DiskGuardComponents, init: DiskGuardInit = {}) {
    super()
    this.dataDir = components.dataDir
    this.#logger = components.logger
    this.#freeBytes = components.freeBytes ?? statfsFree
    this.#metrics = components.metrics
    this.#probeIntervalMs = init.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS
    this.#resumeFreeBytes = init.resumeFreeBytes ?? DEFAULT_RESUME_FREE_BYTES
  }

  /** The logger exists only after the guard (its file is one of the guarded writers). */
  useLogger (logger: Logger): void {
    this.#logger = logger
  }

  get full (): boolean {
    return this.#state.full
  }

  state (): DiskState {
    return { ...this.#state }
  }

  /** Run before writing resumes; a hook that fails keeps the disk marked full and is tried again. */
  beforeResume (hook: ResumeHook): () => void {
    this.#hooks.push(hook)
    return () => {
      const i = this.#hooks.indexOf(hook)
      if (i >= 0) this.#hooks.splice(i, 1)
    }
  }

  /** Refuse a write while the disk is full. */
  check (what = 'writes'): void {
    if (!this.#state.full) return
    this.#state.refused = (this.#state.refused ?? 0) + 1
    throw new DiskFullError(`the disk holding ${this.dataDir} is full: ${what} wait until space is freed`, this.#state.path ?? this.dataDir)
  }

  /**
   * Look at a failed write: when the disk is full, mark it so (logging once)
   * and answer true; any other failure is the caller's to handle.
   */
  report (err: unknown, path?: string): boolean {
    if (!isDiskFull(err)) return false
    if (this.#state.full || this.#closed) return true
    const failed = path ?? pathOf(err) ?? this.dataDir
    this.#state = { full: true, since: Date.now(), path: failed, refused: 0 }
    this.#metrics?.diskFull(true)
    const message = (err as Error)?.message ?? String(err)
    // deferred: the log file may be the writer that just failed, inside pino's write
    setImmediate(() => {
      this.#logger?.error({ service: 'storage', path: failed, dataDir: this.dataDir, err: message }, 'disk full: writing stopped; reads are still answered and writing resumes by itself once space is freed')
    })
    this.safeDispatchEvent('full', { detail: this.state() })
    this.#schedule()
    return true
  }

  /** A DiskFullError for a disk-full failure (marking the disk full), else `err` as it is. */
  failure (err: unknown, path?: string): unknown {
    if (!this.report(err, path)) return err
    if ((err as { code?: string })?.code === 'ERR_DISK_FULL') return err
    return new DiskFullError(`the disk holding ${this.dataDir} is full: ${(err as Error)?.message ?? String(err)}`, path ?? pathOf(err) ?? this.dataDir, { cause: err })
  }

  /** Resolves once writing has resumed (at once when the disk is not full). */
  async waitForSpace (signal?: AbortSignal): Promise<void> {
    if (!this.#state.full) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        signal?.removeEventListener('abort', aborted)
        resolve()
      }
      const aborted = (): void => {
        this.removeEventListener('resume', done)
        reject(signal?.reason)
      }
      this.addEventListener('resume', done, { once: true })
      signal?.addEventListener('abort', aborted, { once: true })
    })
  }

  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
  }

  #schedule (): void {
    if (this.#closed) return
    clearTimeout(this.#timer)
    // not unref'd: an agent waiting for space to open its database has nothing else keeping it alive
    this.#timer = setTimeout(() => { void this.#probe() }, this.#probeIntervalMs)
  }

  async #probe (): Promise<void> {
    if (!this.#state.full || this.#closed) return
    let free: number
    try {
      free = await this.#freeBytes(this.dataDir)
    } catch (err: any) {
      this.#logger?.debug({ service: 'storage', dataDir: this.dataDir, err: err.message }, 'could not look at free space')
      this.#schedule()
      return
    }
    if (free < this.#resumeFreeBytes) {
      this.#schedule()
      return
    }
    for (const hook of [...this.#hooks]) {
      try {
        await hook()
      } catch (err: any) {
        if (!isDiskFull(err)) this.#logger?.warn({ service: 'storage', dataDir: this.dataDir, err: err.message }, 'writing could not resume yet')
        this.#schedule()
        return
      }
    }
    const was = this.#state
    this.#state = { full: false }
    this.#metrics?.diskFull(false)
    this.#logger?.info({ service: 'storage', dataDir: this.dataDir, freeBytes: free, fullForMs: Date.now() - (was.since ?? Date.now()), refused: was.refused ?? 0 }, 'disk has space again: writing resumed')
    this.safeDispatchEvent('resume', { detail: this.state() })
  }
}
