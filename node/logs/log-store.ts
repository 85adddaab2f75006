import { diskGuardOf, type Database } from '../store/db.ts'

/** pino's level labels, lowest first, with their numbers. */
export const LOG_LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const
export type LogLevel = keyof typeof LOG_LEVELS

export const DEFAULT_RETAIN_ENTRIES = 100_000
export const DEFAULT_RETAIN_BYTES = 32 * 1024 * 1024
export const DEFAULT_RETAIN_MS = 7 * 24 * 3600 * 1000
export const DEFAULT_MAX_LINE_BYTES = 8 * 1024
export const DEFAULT_FLUSH_INTERVAL_MS = 250
export const DEFAULT_MAX_PENDING = 10_000
const PRUNE_INTERVAL_MS = 60_000
/** Pruning goes this far below a cap so it does not run after every flush. */
const PRUNE_TO = 0.9
const PRUNE_BATCH = 1000

export interface LogStoreInit {
  /** Keep at most this many lines; 0 keeps none. @default DEFAULT_RETAIN_ENTRIES */
  maxEntries?: number
  /** Keep at most this many bytes of lines. @default DEFAULT_RETAIN_BYTES */
  maxBytes?: number
  /** Drop lines older than this. @default DEFAULT_RETAIN_MS */
  maxAgeMs?: number
  /** A longer line is stored as its level, time, node, service and the start of its msg. @default DEFAULT_MAX_LINE_BYTES */
  maxLineBytes?: number
  /** @default DEFAULT_FLUSH_INTERVAL_MS */
  flushIntervalMs?: number
  /** Lines buffered while the database is closed or busy; past this the oldest are dropped. @default DEFAULT_MAX_PENDING */
  maxPending?: number
  /** @default Date.now */
  now?: () => number
}

/** What to look for. Every field narrows; all are optional. */
export interface LogQuery {
  /** ms since epoch, inclusive */
  since?: number
  /** ms since epoch, inclusive */
  until?: number
  /** lowest level returned */
  level?: LogLevel
  services?: string[]
  /** case-insensitive substring of the JSON line */
  text?: string
  /** @default 'desc' (newest first) */
  order?: 'asc' | 'desc'
}

export interface LogStoreStats {
  entries: number
  bytes: number
  /** lines lost because the buffer overflowed or the database failed */
  dropped: number
  /** lines waiting to be written (held while the disk is full) */
  pending: number
}

interface Meta { count: number, bytes: number, seq: number }

function sublevels (db: Database): { lines: ReturnType<typeof db.sublevel<string, string>>, meta: ReturnType<typeof db.sublevel<string, Meta>> } {
  return {
    lines: db.sublevel<string, string>('logs', { valueEncoding: 'utf8' }),
    meta: db.sublevel<string, Meta>('logs-meta', { valueEncoding: 'json' })
  }
}
type Sublevels = ReturnType<typeof sublevels>

const TIME_RE = /"time":(\d{1,15})[,}]/

/** Keys sort by time, then by a per-store sequence number. */
function keyAt (time: number, seq = 0): string {
  return `${String(Math.max(0, Math.floor(time))).padStart(15, '0')}.${String(seq).padStart(10, '0')}`
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/**
 * An agent's own logs, kept in a `logs` sublevel of its database with
 * bounded retention (count, bytes and age), so the coordinator can search
 * every node's logs over the mesh without collecting them. It is a pino
 * destination: `write()` takes one JSON line, buffers it and returns at
 * once; lines reach level in batches, and the counters that enforce the
 * caps are committed in the same atomic batch as the lines they count.
 */
export class LogStore {
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #maxAgeMs: number
  readonly #maxLineBytes: number
  readonly #flushIntervalMs: number
  readonly #maxPending: number
  readonly #now: () => number
  #db?: Database
  #lines?: Sublevels['lines']
  #metaDb?: Sublevels['meta']
  #meta: Meta = { count: 0, bytes: 0, seq: 0 }
  #pending: Array<[number, string]> = []
  #flushTimer?: NodeJS.Timeout
  #pruneTimer?: NodeJS.Timeout
  #work: Promise<void> = Promise.resolve()
  #dropped = 0
  #state: 'new' | 'open' | 'closed' = 'new'
  #offResume?: () => void
  #guard?: ReturnType<typeof diskGuardOf>

  constructor (init: LogStoreInit = {}) {
    this.#maxEntries = init.maxEntries ?? DEFAULT_RETAIN_ENTRIES
    this.#maxBytes = init.maxBytes ?? DEFAULT_RETAIN_BYTES
    this.#maxAgeMs = init.maxAgeMs ?? DEFAULT_RETAIN_MS
    this.#maxLineBytes = init.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES
    this.#flushIntervalMs = init.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS
    this.#maxPending = init.maxPending ?? DEFAULT_MAX_PENDING
    this.#now = init.now ?? Date.now
  }

  /** Start persisting into `db`; lines written before this were buffered. */
  async open (db: Database): Promise<void> {
    if (this.#state !== 'new') throw new Error(`log store is ${this.#state}`)
    this.#db = db
    const { lines, meta } = sublevels(db)
    this.#lines = lines
    this.#metaDb = meta
    this.#meta = await meta.get('meta') ?? { count: 0, bytes: 0, seq: 0 }
    this.#state = 'open'
    const guard = this.#guard = diskGuardOf(db)
    if (guard != null) {
      const resume = (): void => { this.#scheduleFlush() }
      guard.addEventListener('resume', resume)
      this.#offResume = () => { guard.removeEventListener('resume', resume) }
    }
    this.#pruneTimer = setInterval(() => { this.#enqueue(async () => { await this.#prune() }) }, PRUNE_INTERVAL_MS)
    this.#pruneTimer.unref()
    this.#enqueue(async () => { await this.#prune() })
    if (this.#pending.length > 0) this.#scheduleFlush()
  }

  /** Flush what is buffered and stop; later lines are ignored. */
  async close (): Promise<void> {
    if (this.#state !== 'open') {
      this.#state = 'closed'
      return
    }
    clearInterval(this.#pruneTimer)
    clearTimeout(this.#flushTimer)
    this.#offResume?.()
    this.#flushTimer = undefined
    await this.flush()
    this.#state = 'closed'
  }

  /** pino destination: one JSON line. Never throws. */
  write (chunk: string): boolean {
    if (this.#state === 'closed' || this.#maxEntries === 0) return true
    let line = chunk.endsWith('\n') ? chunk.slice(0, -1) : chunk
    if (line.length === 0) return true
    const match = TIME_RE.exec(line)
    const time = match == null ? this.#now() : Number(match[1])
    if (line.length > this.#maxLineBytes / 3 && Buffer.byteLength(line) > this.#maxLineBytes) line = this.#shorten(line, time)
    this.#pending.push([time, line])
    if (this.#pending.length > this.#maxPending) {
      const excess = this.#pending.length - this.#maxPending
      this.#pending.splice(0, excess)
      this.#dropped += excess
    }
    if (this.#state === 'open') this.#scheduleFlush()
    return true
  }

  /** Write everything buffered so far. */
  async flush (): Promise<void> {
    if (this.#state !== 'open') return
    this.#enqueue(async () => { await this.#flushNow() })
    await this.#work
  }

  stats (): LogStoreStats {
    return { entries: this.#meta.count, bytes: this.#meta.bytes, dropped: this.#dropped, pending: this.#pending.length }
  }

  /**
   * Matching lines (JSON text), newest first unless `order` is `asc`. The
   * iterator reads a snapshot of the store lazily; stop early by returning.
   */
  async * query (query: LogQuery = {}, signal?: AbortSignal): AsyncGenerator<string> {
    if (this.#state !== 'open' || this.#lines == null) return
    await this.flush()
    const minLevel = query.level == null ? 0 : LOG_LEVELS[query.level]
    const services = query.services == null || query.services.length === 0 ? undefined : new Set(query.services)
    const text = query.text == null || query.text === '' ? undefined : new RegExp(escapeRegExp(query.text), 'i')
    const it = this.#lines.iterator({
      gte: keyAt(query.since ?? 0),
      lt: keyAt((query.until ?? 10 ** 15 - 2) + 1),
      reverse: query.order !== 'asc'
    })
    try {
      for await (const [, line] of it) {
        signal?.throwIfAborted()
        if (text != null && !text.test(line)) continue
        if (minLevel > 0 || services != null) {
          let record: { level?: unknown, service?: unknown }
          try {
            record = JSON.parse(line)
          } catch {
            continue
          }
          if (minLevel > 0 && (LOG_LEVELS[record.level as LogLevel] ?? 0) < minLevel) continue
          if (services != null && !services.has(String(record.service))) continue
        }
        yield line
      }
    } finally {
      await it.close()
    }
  }

  /** Keep the essentials of an oversized line so it stays findable. */
  #shorten (line: string, time: number): string {
    let record: Record<string, unknown> = {}
    try {
      record = JSON.parse(line)
    } catch {}
    const msg = typeof record.msg === 'string' ? record.msg.slice(0, 1024) : line.slice(0, 1024)
    return JSON.stringify({ level: record.level ?? 'info', time, node: record.node, service: record.service, msg, truncated: true })
  }

  #scheduleFlush (): void {
    if (this.#flushTimer != null) return
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined
      this.#enqueue(async () => { await this.#flushNow() })
    }, this.#flushIntervalMs)
    this.#flushTimer.unref()
  }

  /** Flushes and prunes run one at a time, in order. */
  #enqueue (task: () => Promise<void>): void {
    this.#work = this.#work.then(task).catch(err => {
      // a full disk is logged once by the disk guard; the lines wait in memory meanwhile
      if (err?.code === 'ERR_DISK_FULL') return
      // logging here would feed the failure back into this store
      process.emitWarning(`gatemesh log store: ${err.message}`)
    })
  }

  async #flushNow (): Promise<void> {
    const lines = this.#pending
    // while the disk is full the lines wait here (bounded by maxPending); the guard's resume flushes them
    if (lines.length === 0 || this.#db == null || this.#lines == null || this.#guard?.full === true) return
    this.#pending = []
    const meta = { ...this.#meta }
    const batch = this.#db.batch()
    for (const [time, line] of lines) {
      const key = keyAt(time, ++meta.seq)
      batch.put(key, line, { sublevel: this.#lines })
      meta.count++
      meta.bytes += Buffer.byteLength(line) + key.length
    }
    batch.put('meta', meta, { sublevel: this.#metaDb })
    try {
      await batch.write()
    } catch (err: any) {
      if (err?.code === 'ERR_DISK_FULL') {
        // keep them for when space returns, newest first if something must go
        this.#pending = lines.concat(this.#pending)
        const excess = this.#pending.length - this.#maxPending
        if (excess > 0) {
          this.#pending.splice(0, excess)
          this.#dropped += excess
        }
      } else {
        this.#dropped += lines.length
      }
      throw err
    }
    this.#meta = meta
    if (meta.count > this.#maxEntries || meta.bytes > this.#maxBytes) await this.#prune()
  }

  /** Delete the oldest lines until under every cap. */
  async #prune (): Promise<void> {
    if (this.#db == null || this.#lines == null || this.#guard?.full === true) return
    const cutoff = keyAt(this.#now() - this.#maxAgeMs)
    const targetCount = this.#meta.count > this.#maxEntries ? Math.floor(this.#maxEntries * PRUNE_TO) : this.#maxEntries
    const targetBytes = this.#meta.bytes > this.#maxBytes ? Math.floor(this.#maxBytes * PRUNE_TO) : this.#maxBytes
    const over = (m: Meta, key: string): boolean => key < cutoff || m.count > targetCount || m.bytes > targetBytes
    const it = this.#lines.iterator()
    try {
      while (true) {
        const chunk = await it.nextv(PRUNE_BATCH)
        if (chunk.length === 0) return
        const meta = { ...this.#meta }
        const batch = this.#db.batch()
        let done = false
        for (const [key, line] of chunk) {
          if (!over(meta, key)) {
            done = true
            break
          }
          batch.del(key, { sublevel: this.#lines })
          meta.count--
          meta.bytes -= Buffer.byteLength(line) + key.length
        }
        if (batch.length > 0) {
          batch.put('meta', meta, { sublevel: this.#metaDb })
          await batch.write()
          this.#meta = meta
        } else {
          await batch.close()
        }
        if (done) return
      }
    } finally {
      await it.close()
    }
  }
}
