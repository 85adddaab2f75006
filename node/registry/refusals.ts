import { ClockDriftError, RegistryError } from './errors.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Logger } from 'pino'

/** What the registry counts about the entries it refuses. */
export interface RefusalMetrics {
  rejected(reason: string): void
  /** One entry of a certified writer refused: by writer and reason. */
  writerRefused?(writer: string, reason: string): void
  /** How far (ms) the clock of a writer whose entry was refused for drift runs ahead of ours. */
  clockOffset?(writer: string, offsetMs: number): void
}

export interface RefusalsInit {
  /** Log one warning per writer and reason at most this often. @default 30_000 */
  warnEveryMs?: number
  /** @default Date.now */
  now?: () => number
}

/** Reasons that say a certified peer misbehaves or is misconfigured: worth a warning, by writer. */
const LOUD = new Set(['ERR_CLOCK_DRIFT', 'ERR_QUOTA_EXCEEDED', 'ERR_INVALID_TIMESTAMP', 'ERR_INVALID_VALUE', 'ERR_UNAUTHORIZED_WRITE', 'ERR_BAD_ENTRY_SIGNATURE'])
const MAX_WRITER_LABELS = 1000

/**
 * Counts and reports refused registry entries. Refusals of a certified
 * writer's entries (clock drift, quota, malformed values) are logged at warn
 * naming the writer, at most once per writer and reason per `warnEveryMs`
 * with the number suppressed in between, and counted per writer; the rest
 * (unknown writers, relayed duplicates) stay at debug, since anyone may
 * cause them.
 */
export class Refusals {
  readonly #log: Logger
  readonly #metrics: RefusalMetrics | undefined
  readonly #isCertified: (writer: string) => boolean
  readonly #warnEveryMs: number
  readonly #now: () => number
  readonly #lastWarn = new Map<string, { at: number, suppressed: number }>()
  readonly #labelled = new Set<string>()

  constructor (log: Logger, metrics: RefusalMetrics | undefined, isCertified: (writer: string) => boolean, init: RefusalsInit = {}) {
    this.#log = log
    this.#metrics = metrics
    this.#isCertified = isCertified
    this.#warnEveryMs = init.warnEveryMs ?? 30_000
    this.#now = init.now ?? Date.now
  }

  refuse (err: any, e?: Pick<WireEntry, 'k' | 'w'>): void {
    const reason: string = err instanceof RegistryError ? err.code : (err?.code ?? 'ERR_UNKNOWN')
    this.#metrics?.rejected(reason)
    const writer = e?.w
    if (writer == null || !LOUD.has(reason) || !this.#isCertified(writer)) {
      this.#log.debug({ reason, key: e?.k, writer, err: err?.message }, 'registry entry refused')
      return
    }
    const label = this.#label(writer)
    this.#metrics?.writerRefused?.(label, reason)
    const offsetMs = err instanceof ClockDriftError ? err.offsetMs : undefined
    if (offsetMs != null) this.#metrics?.clockOffset?.(label, offsetMs)
    const id = `${writer}\u0000${reason}`
    const now = this.#now()
    const last = this.#lastWarn.get(id)
    if (last != null && now - last.at < this.#warnEveryMs) {
      last.suppressed++
      return
    }
    if (this.#lastWarn.size > 10_000) this.#lastWarn.clear()
    this.#lastWarn.set(id, { at: now, suppressed: 0 })
    const msg = offsetMs != null
      ? `refusing entries of ${writer}: its clock is ${Math.round(offsetMs / 1000)} s ahead of ours`
      : `refusing entries of ${writer}: ${err?.message ?? reason}`
    this.#log.warn({ reason, writer, key: e?.k, ...(offsetMs == null ? {} : { offsetMs }), suppressed: last?.suppressed ?? 0 }, msg)
  }

  /** Writers as metric labels, bounded so a large fleet cannot grow the metrics without limit. */
  #label (writer: string): string {
    if (this.#labelled.has(writer)) return writer
    if (this.#labelled.size >= MAX_WRITER_LABELS) return 'other'
    this.#labelled.add(writer)
    return writer
  }
}
