import { join } from 'node:path'
import { Level } from 'level'
import { DiskGuard, isDiskFull } from './disk-guard.ts'
import { DatabaseDamagedError, DatabaseLockedError, DatabaseOpenError } from './errors.ts'
import type { Logger } from 'pino'

export type Database = Level<string, unknown>

/** Where an agent or coordinator keeps its LevelDB inside its data dir. */
export const DB_DIR = 'db'

export interface OpenDatabaseInit {
  /** The disk watch that failed writes report to; one of its own when not given. */
  guard?: DiskGuard
  logger?: Logger
  /** Stop waiting for space to open the database. */
  signal?: AbortSignal
  /** Whose database: says what starting fresh would lose. @default 'agent' */
  owner?: 'agent' | 'coordinator'
}

/** The parts of level's private write API (abstract-level's `_put` and friends) a guard wraps. */
interface WriteInternals {
  _put(key: unknown, value: unknown, options: unknown): Promise<void>
  _del(key: unknown, options: unknown): Promise<void>
  _batch(operations: unknown[], options: unknown): Promise<void>
  _chainedBatch(): { _write(options: unknown): Promise<void> }
}
const base = Level.prototype as unknown as WriteInternals

/**
 * LevelDB whose writes go through a DiskGuard. Every write of the root and
 * of its sublevels reaches one of these four methods, so this is the one
 * place that (a) refuses writes at once while the disk is full and (b)
 * turns a write that failed for want of space into DiskFullError, marking
 * the disk full. A memtable flush that failed for want of space leaves
 * LevelDB refusing every later write until it is reopened, so the guard
 * reopens it (and its sublevels) before writing resumes.
 */
export class GuardedLevel extends Level<string, unknown> {
  readonly guard: DiskGuard
  readonly #sublevels = new Set<{ status: string, open(): Promise<void> }>()
  #unhook?: () => void
  #reopening = false

  /** `ownsGuard`: made for this database alone, so closing the database closes it (and its timer). */
  constructor (location: string, guard: DiskGuard, options: ConstructorParameters<typeof Level<string, unknown>>[1], ownsGuard = false) {
    super(location, options)
    this.guard = guard
    // sublevels close with their parent and stay closed until opened again
    this.hooks.newsub.add(sublevel => { this.#sublevels.add(sublevel as unknown as { status: string, open(): Promise<void> }) })
    // closed by its owner (not by a reopen): the guard must not open it again
    this.on('closing', () => {
      if (this.#reopening) return
      this.#unhook?.()
      this.#unhook = undefined
      if (ownsGuard) guard.close()
    })
  }

  /** Once open: reopen before writing resumes after the disk was full. */
  watchDisk (): void {
    this.#unhook ??= this.guard.beforeResume(async () => { await this.reopen() })
  }

  async _put (key: unknown, value: unknown, options: unknown): Promise<void> {
    await this.#write(async () => { await base._put.call(this, key, value, options) })
  }

  async _del (key: unknown, options: unknown): Promise<void> {
    await this.#write(async () => { await base._del.call(this, key, options) })
  }

  async _batch (operations: unknown[], options: unknown): Promise<void> {
    await this.#write(async () => { await base._batch.call(this, operations, options) })
  }

  _chainedBatch (): ReturnType<WriteInternals['_chainedBatch']> {
    const batch = base._chainedBatch.call(this)
    const write = batch._write.bind(batch)
    batch._write = async options => { await this.#write(async () => { await write(options) }) }
    return batch
  }

  /** Close and open again (clearing LevelDB's sticky write error), sublevels included. */
  async reopen (): Promise<void> {
    this.#reopening = true
    try {
      if (this.status === 'open') await this.close()
      await this.open()
    } finally {
      this.#reopening = false
    }
    for (const sub of this.#sublevels) if (sub.status === 'closed') await sub.open()
  }

  async #write (op: () => Promise<void>): Promise<void> {
    this.guard.check('database writes')
    try {
      await op()
    } catch (err) {
      throw this.guard.failure(err)
    }
  }
}

/**
 * The LevelDB of an agent or coordinator under `<dataDir>/db`; subsystems
 * take sublevels of it. Opening tells the reasons it can fail apart: a full
 * disk is waited out (logged once) when a guard is given, a lock held by
 * another process and a damaged database are errors that name the path and
 * say what to do.
 */
export async function openDatabase (dataDir: string, init: OpenDatabaseInit = {}): Promise<GuardedLevel> {
  const path = join(dataDir, DB_DIR)
  // a service (given its guard) waits out a full disk; a one-shot tool (`gatemesh user add`) is told at once
  const waits = init.guard != null
  const guard = init.guard ?? new DiskGuard({ dataDir, ...(init.logger == null ? {} : { logger: init.logger }) })
  // LevelDB defaults (4 MiB memtable, 8 MiB block cache) suit a server; the
  // agent's working set is a few thousand small entries held in memory anyway
  const db = new GuardedLevel(path, guard, { valueEncoding: 'json', writeBufferSize: 512 * 1024, cacheSize: 1024 * 1024 }, !waits)
  while (true) {
    try {
      await db.open()
      break
    } catch (err: any) {
      const cause = err?.cause ?? err
      // opening writes (a new log file, a new MANIFEST): with no space it fails, and only space helps
      if (!waits || !guard.report(cause, path)) throw openError(path, cause, init.owner ?? 'agent')
      await guard.waitForSpace(init.signal)
    }
  }
  db.watchDisk()
  return db
}

/** What is lost when a damaged database is moved away instead of repaired. */
const FRESH_START = {
  agent: 'the registry comes back from the mesh by anti-entropy, but this node\'s pending outbox (undelivered notifications and actions), ' +
    'its stored logs, its bundle records (bundles are pulled again), instances started through its API and its drain/evict state are lost',
  coordinator: 'users, API tokens, sessions, join tokens, deployment owners and the model repository index are lost (restore it from a backup instead)'
}

function openError (path: string, cause: any, owner: 'agent' | 'coordinator'): Error {
  const reason = String(cause?.message ?? cause)
  if (cause?.code === 'LEVEL_LOCKED') {
    return new DatabaseLockedError(`database ${path} is locked by another process (${reason}); is another agent or coordinator running on this data dir?`, path, { cause })
  }
  if (isDiskFull(cause)) return new DatabaseOpenError(`database ${path} cannot open: the disk is full (${reason})`, path, { cause })
  if (cause?.code === 'LEVEL_CORRUPTION' || (cause?.code === 'LEVEL_IO_ERROR' && !/Permission denied|Read-only file system/.test(reason))) {
    return new DatabaseDamagedError(`database ${path} is damaged: ${reason}. ` +
      `Repair it with \`gatemesh repair --data ${dirOf(path)}\` (LevelDB's repair keeps every record it can read), then start again; ` +
      `or move ${path} away and start fresh: ${FRESH_START[owner]}`, path, { cause })
  }
  return new DatabaseOpenError(`database ${path} cannot open: ${reason}`, path, { cause })
}

function dirOf (path: string): string {
  return path.slice(0, -(DB_DIR.length + 1))
}

/** The disk watch of a database opened by openDatabase; none for a plain Level (tests). */
export function diskGuardOf (db: Database): DiskGuard | undefined {
  return db instanceof GuardedLevel ? db.guard : undefined
}
