import { QuotaExceededError } from './errors.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

/**
 * Per-writer limits on what a node may make every peer store about itself
 * (the keys it owns: `node/`, `health/`, `instance/`, `scheduler/`,
 * `placement/`, `bundle/…/<self>`). Fleet-authorised keys are bounded by
 * whoever holds the fleet key, not here.
 */
export interface WriterQuotaInit {
  /** Live keys one writer may hold (tombstones are bounded by the bytes). @default DEFAULT_QUOTA.maxKeys */
  maxKeys?: number
  /** Bytes of entries (key, value text, signature, writer, stamp) one writer may hold, tombstones included. @default DEFAULT_QUOTA.maxBytes */
  maxBytes?: number
  /** Entries per second one writer may send through gossip, sustained. @default DEFAULT_QUOTA.entriesPerSec */
  entriesPerSec?: number
  /** … and in one burst. @default DEFAULT_QUOTA.burst */
  burst?: number
}

export const DEFAULT_QUOTA = {
  maxKeys: 4096,
  maxBytes: 4 * 1024 * 1024,
  entriesPerSec: 50,
  burst: 1000
} as const

/** Bookkeeping of one entry beyond its strings: the stamp, the map slot, object headers. */
const ENTRY_OVERHEAD = 64

/**
 * What one entry costs its writer, roughly what the replica keeps of it: its
 * strings in UTF-16 code units plus a fixed overhead. A tombstone costs its
 * key, signature and writer, so deletes are bounded too.
 */
export function entryCost (e: Pick<WireEntry, 'k' | 'v' | 's' | 'w'> & { a?: string | undefined }): number {
  return e.k.length + (e.v?.length ?? 0) + e.s.length + e.w.length + (e.a?.length ?? 0) + ENTRY_OVERHEAD
}

const live = (e: WireEntry | undefined): number => e != null && e.v != null ? 1 : 0

export interface WriterUsage { keys: number, bytes: number }

interface Bucket { tokens: number, at: number }

/** Keeps each writer's usage as entries come and go, and a token bucket per writer for gossip. */
export class WriterQuotas {
  readonly maxKeys: number
  readonly maxBytes: number
  readonly #rate: number
  readonly #burst: number
  readonly #now: () => number
  readonly #usage = new Map<string, WriterUsage>()
  readonly #buckets = new Map<string, Bucket>()

  constructor (init: WriterQuotaInit = {}, now: () => number = Date.now) {
    this.maxKeys = init.maxKeys ?? DEFAULT_QUOTA.maxKeys
    this.maxBytes = init.maxBytes ?? DEFAULT_QUOTA.maxBytes
    this.#rate = init.entriesPerSec ?? DEFAULT_QUOTA.entriesPerSec
    this.#burst = init.burst ?? DEFAULT_QUOTA.burst
    this.#now = now
  }

  usage (writer: string): WriterUsage {
    return this.#usage.get(writer) ?? { keys: 0, bytes: 0 }
  }

  /**
   * Throws QuotaExceededError when `e` replacing `previous` (both the
   * writer's own) would take the writer past a limit. A change that does
   * not grow what the writer holds is always allowed, so a writer at its
   * limit can still delete and shrink.
   */
  check (e: WireEntry, previous: WireEntry | undefined): void {
    const u = this.usage(e.w)
    const keys = u.keys + live(e) - live(previous)
    const bytes = u.bytes - (previous == null ? 0 : entryCost(previous)) + entryCost(e)
    if (keys > this.maxKeys && keys > u.keys) {
      throw new QuotaExceededError(`${e.k}: ${e.w} already holds ${u.keys} keys (limit ${this.maxKeys})`, 'keys')
    }
    if (bytes > this.maxBytes && bytes > u.bytes) {
      throw new QuotaExceededError(`${e.k}: ${e.w} would hold ${bytes} bytes (limit ${this.maxBytes})`, 'bytes')
    }
  }

  add (e: WireEntry): void {
    const u = this.#usage.get(e.w) ?? { keys: 0, bytes: 0 }
    u.keys += live(e)
    u.bytes += entryCost(e)
    this.#usage.set(e.w, u)
  }

  remove (e: WireEntry): void {
    const u = this.#usage.get(e.w)
    if (u == null) return
    u.keys -= live(e)
    u.bytes -= entryCost(e)
    if (u.bytes <= 0) this.#usage.delete(e.w)
  }

  /** Take `n` entries from the writer's gossip budget; false (and nothing taken) when it has not enough. */
  take (writer: string, n: number): boolean {
    const now = this.#now()
    let b = this.#buckets.get(writer)
    if (b == null) {
      if (this.#buckets.size >= 10_000) this.#prune(now)
      b = { tokens: this.#burst, at: now }
      this.#buckets.set(writer, b)
    }
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#rate / 1000)
    b.at = now
    if (b.tokens < n) return false
    b.tokens -= n
    return true
  }

  /** Give back `n` entries taken for entries that turned out not to be the writer's (or not valid at all). */
  refund (writer: string, n: number): void {
    const b = this.#buckets.get(writer)
    if (b != null) b.tokens = Math.min(this.#burst, b.tokens + n)
  }

  /** Buckets that have refilled are the same as no bucket. */
  #prune (now: number): void {
    for (const [w, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.#rate / 1000 >= this.#burst) this.#buckets.delete(w)
    }
  }
}
