import { createHash } from 'node:crypto'
import type { AbstractSublevel } from 'abstract-level'

/** What makes one action of one request: the job id (and idempotency key) is made from these. */
export interface ActionKeyParts {
  /** the id the request got where it entered the mesh, or the sensor reading's own */
  requestId: string
  instance: string
  rule: string
  /** the action's index in its rule */
  action: number
  /** the row of the request the rule fired on */
  row: number
}

/**
 * The idempotency key of one action of one request, the same on every node
 * that runs the request: a UUID (version 8, RFC 9562) from a SHA-256 of the
 * parts, so it fits wherever a job id went before (Idempotency-Key,
 * Message-ID, MQTT user property) whatever characters the request id has.
 */
export function actionKey (parts: ActionKeyParts): string {
  const hex = createHash('sha256').update(JSON.stringify([parts.requestId, parts.instance, parts.rule, parts.action, parts.row])).digest('hex')
  const variant = ((parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16)
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-8${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`
}

export const DEFAULT_DEDUPE_WINDOW_MS = 24 * 3600_000
export const DEFAULT_DEDUPE_MAX_ENTRIES = 10_000

export interface DedupeWindowInit {
  /** How long a job id is remembered after it was taken. @default DEFAULT_DEDUPE_WINDOW_MS */
  windowMs?: number
  /** Job ids remembered at most; past it the oldest are forgotten first. @default DEFAULT_DEDUPE_MAX_ENTRIES */
  maxEntries?: number
}

type Seen = AbstractSublevel<any, any, string, number>
export type SeenOp = { type: 'put', key: string, value: number, sublevel: Seen } | { type: 'del', key: string, sublevel: Seen }

/**
 * The job ids the outbox took lately, with when: kept in level so a repeat
 * is still dropped after a restart, and bounded in time and count so a
 * flood of distinct requests costs a fixed amount of memory and disk.
 */
export class DedupeWindow {
  readonly #db: Seen
  readonly #windowMs: number
  readonly #maxEntries: number
  /** id → when taken, oldest first (a Map keeps insertion order) */
  readonly #seen = new Map<string, number>()

  constructor (db: Seen, init: DedupeWindowInit = {}) {
    this.#db = db
    this.#windowMs = init.windowMs ?? DEFAULT_DEDUPE_WINDOW_MS
    this.#maxEntries = init.maxEntries ?? DEFAULT_DEDUPE_MAX_ENTRIES
  }

  /** Read what was remembered, forgetting (on disk too) what fell out of the window meanwhile. */
  async load (now = Date.now()): Promise<void> {
    const entries: Array<[string, number]> = []
    for await (const [id, at] of this.#db.iterator()) entries.push([id, typeof at === 'number' ? at : 0])
    entries.sort((a, b) => a[1] - b[1])
    for (const [id, at] of entries) this.#seen.set(id, at)
    const ops = this.#evict(now)
    if (ops.length > 0) await this.#db.batch(ops.map(({ type, key }) => ({ type: 'del' as const, key })))
  }

  get size (): number {
    return this.#seen.size
  }

  /** Was `id` taken within the window? */
  has (id: string, now = Date.now()): boolean {
    const at = this.#seen.get(id)
    return at != null && at > now - this.#windowMs
  }

  /** When `id` was taken, while remembered. */
  takenAt (id: string): number | undefined {
    return this.#seen.get(id)
  }

  /** Remember `id` as taken at `now`: the writes for the caller's batch (the entry, and the entries it pushed out). */
  record (id: string, now = Date.now()): SeenOp[] {
    this.#seen.delete(id)
    this.#seen.set(id, now)
    return [{ type: 'put', key: id, value: now, sublevel: this.#db }, ...this.#evict(now)]
  }

  /** Undo `record` for a job that could not be written at all. */
  forget (id: string): void {
    this.#seen.delete(id)
  }

  #evict (now: number): SeenOp[] {
    const ops: SeenOp[] = []
    for (const [id, at] of this.#seen) {
      if (this.#seen.size <= this.#maxEntries && at > now - this.#windowMs) break
      this.#seen.delete(id)
      ops.push({ type: 'del', key: id, sublevel: this.#db })
    }
    return ops
  }
}
