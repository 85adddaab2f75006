import { REVOKED_PREFIX } from '../../protocols/registry/revocation.ts'
import { BUCKETS, bucketOf, isVolatile } from '../../protocols/registry-sync/index.ts'
import { authorityFor, type OwnershipRule } from './acl.ts'
import { compareEntries, toRegistryEntry } from './entry.ts'
import { RevokedWriterError } from './errors.ts'
import type { WriterQuotas } from './quota.ts'
import type { RegistryStore } from './store.ts'
import type { ChangeFeed, RegistryChange } from './watch.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Logger } from 'pino'

export interface ReplicaInit {
  store: RegistryStore
  feed: ChangeFeed
  quotas: WriterQuotas
  rules: readonly OwnershipRule[]
  isRevoked(writer: string): boolean
  /** Past the retention: never installed, collected by `collect`. */
  expired(e: WireEntry): boolean
  /** An entry refused at install (quota, revoked writer). */
  onRefused(err: Error, e: WireEntry): void
  logger: Logger
  /** Entries from peers wait this long for others to share one disk write; this node's own go at once. @default PERSIST_DELAY_MS */
  persistDelayMs?: number
}

/**
 * How long entries from peers wait to be written together. Every write was
 * a LevelDB batch of its own, a seventh of an idle agent's main thread at 30
 * members; the replicated state is the mesh's too, so what a crash loses in
 * this window comes back at the next anti-entropy round.
 */
export const PERSIST_DELAY_MS = 1000

/**
 * The local replica: one winning entry per key under last-writer-wins,
 * each writer's usage of its own keys, change notifications and
 * write-behind persistence. Everything here is synchronous apart from the
 * disk, so checks and installs cannot interleave with other merges.
 */
export class Replica {
  readonly #c: ReplicaInit
  readonly #entries = new Map<string, WireEntry>()
  /** Every key, sorted (by UTF-16 code units, as `<` compares): a prefix is a range, not a scan. */
  #keys: string[] = []
  /** The non-volatile keys of each anti-entropy bucket, and a counter per bucket that moves on every change to them (bucket-digests.ts). */
  readonly #buckets: Array<Set<string>> = Array.from({ length: BUCKETS }, () => new Set())
  readonly #bucketVersions = new Float64Array(BUCKETS)
  #persisting: Promise<void> = Promise.resolve()
  /** What the disk is yet to hear, the newest per key: an entry to put, or null to delete the key */
  #unwritten = new Map<string, WireEntry | null>()
  #writeTimer?: NodeJS.Timeout

  constructor (init: ReplicaInit) {
    this.#c = init
  }

  get size (): number {
    return this.#entries.size
  }

  get (key: string): WireEntry | undefined {
    return this.#entries.get(key)
  }

  values (): IterableIterator<WireEntry> {
    return this.#entries.values()
  }

  /**
   * The entries whose keys start with `prefix`, in key order. The election,
   * scheduler and router ask for one prefix (a zone's endorsements, the
   * placements) many times a second: a range of the sorted keys instead of
   * a pass over every entry (10 K of them at 5000 nodes).
   */
  * withPrefix (prefix: string): Generator<WireEntry> {
    const keys = this.#keys
    for (let i = lowerBound(keys, prefix); i < keys.length; i++) {
      const key = keys[i]!
      if (!key.startsWith(prefix)) return
      yield this.#entries.get(key)!
    }
  }

  /** Moves whenever a non-volatile entry of anti-entropy bucket `bucket` is set or dropped. */
  bucketVersion (bucket: number): number {
    return this.#bucketVersions[bucket] ?? 0
  }

  /** The non-volatile entries of anti-entropy bucket `bucket`. */
  * inBucket (bucket: number): Generator<WireEntry> {
    for (const key of this.#buckets[bucket] ?? []) yield this.#entries.get(key)!
  }

  /**
   * True when `e` would replace what the key holds (nothing yet, or an older
   * entry). An expired entry never does: it is older than whatever the
   * key held when the retention collected it.
   */
  wouldWin (e: WireEntry): boolean {
    const current = this.#entries.get(e.k)
    return (current == null || compareEntries(e, current) > 0) && !this.#c.expired(e)
  }

  /** Whether the writer's quota covers `e`: throws QuotaExceededError when it does not. */
  admit (e: WireEntry): void {
    if (!this.#owned(e)) return
    const previous = this.#entries.get(e.k)
    this.#c.quotas.check(e, previous?.w === e.w ? previous : undefined)
  }

  /** Entries restored from disk (already checked): no notifications, nothing written back. */
  restore (entries: WireEntry[]): void {
    for (const e of entries) this.#set(e)
  }

  /**
   * Install entries that win, within their writers' quotas; returns those
   * that changed state. Each change is announced, then persisted.
   */
  install (entries: WireEntry[], via: RegistryChange['via']): WireEntry[] {
    const changed: WireEntry[] = []
    for (const e of entries) {
      const previous = this.#entries.get(e.k)
      if (!this.wouldWin(e)) continue
      // a revocation outlives its writer's own revocation: the fleet signed it
      if (!e.k.startsWith(REVOKED_PREFIX) && this.#c.isRevoked(e.w)) {
        this.#c.onRefused(new RevokedWriterError(`${e.k}: the fleet revoked ${e.w}`), e)
        continue
      }
      try {
        this.admit(e)
      } catch (err: any) {
        this.#c.onRefused(err, e)
        continue
      }
      this.#set(e)
      changed.push(e)
      this.#emit({ key: e.k, entry: toRegistryEntry(e), via, ...(previous == null ? {} : { previous: toRegistryEntry(previous) }) })
    }
    if (changed.length > 0) {
      for (const e of changed) this.#unwritten.set(e.k, e)
      this.#schedule(via === 'local')
    }
    return changed
  }

  /**
   * Forget everything `writer` wrote (it was revoked): the keys vanish as if
   * never written, listeners hear a deletion, and the disk follows.
   * Revocations it carried stay: the fleet signed them.
   */
  dropWriter (writer: string): number {
    return this.#drop(e => e.w === writer && !e.k.startsWith(REVOKED_PREFIX), 'revocation')
  }

  /** Collect every expired entry (tombstones, and entries of nodes gone past the retention); returns how many. */
  collect (): number {
    return this.#drop(e => this.#c.expired(e), 'expiry')
  }

  /** Forget the entries a node does not keep (zone-local ones of zones it does not follow); returns how many. */
  dropUnkept (keeps: (e: WireEntry) => boolean): number {
    return this.#drop(e => !keeps(e), 'zone')
  }

  /** Remove the entries `which` picks: listeners hear live ones vanish, and the disk follows. */
  #drop (which: (e: WireEntry) => boolean, via: RegistryChange['via']): number {
    const dropped: WireEntry[] = []
    for (const e of this.#entries.values()) if (which(e)) dropped.push(e)
    if (dropped.length > 0) {
      const gone = new Set(dropped.map(e => e.k))
      this.#keys = this.#keys.filter(k => !gone.has(k))
    }
    for (const e of dropped) {
      this.#entries.delete(e.k)
      this.#bucketChanged(e.k, false)
      if (this.#owned(e)) this.#c.quotas.remove(e)
      if (e.v == null) continue
      const previous = toRegistryEntry(e)
      this.#emit({ key: e.k, entry: { ...previous, value: undefined, deleted: true }, previous, via })
    }
    if (dropped.length > 0) {
      // this node's own decision (a revocation, the retention, a zone it left): on disk at once
      for (const e of dropped) this.#unwritten.set(e.k, null)
      this.#schedule(true)
    }
    return dropped.length
  }

  /** Resolves once everything installed so far is on disk. */
  async flushed (): Promise<void> {
    this.#writeNow()
    await this.#persisting
  }

  #set (e: WireEntry): void {
    const previous = this.#entries.get(e.k)
    if (previous != null && this.#owned(previous)) this.#c.quotas.remove(previous)
    if (previous == null) this.#keys.splice(lowerBound(this.#keys, e.k), 0, e.k)
    this.#entries.set(e.k, e)
    this.#bucketChanged(e.k, true)
    if (this.#owned(e)) this.#c.quotas.add(e)
  }

  #bucketChanged (key: string, present: boolean): void {
    if (isVolatile(key)) return
    const b = bucketOf(key)
    if (present) this.#buckets[b]!.add(key)
    else this.#buckets[b]!.delete(key)
    this.#bucketVersions[b]!++
  }

  #owned (e: WireEntry): boolean {
    const authority = authorityFor(e.k, this.#c.rules)
    return authority.kind === 'owner' && authority.owner === e.w
  }

  #emit (change: RegistryChange): void {
    try {
      this.#c.feed.emit(change)
    } catch (err) {
      this.#c.logger.error({ err, key: change.key }, 'registry change listener failed')
    }
  }

  /** Write what is unwritten now (`now`: this node's own write) or within the persist delay. */
  #schedule (now: boolean): void {
    if (now) this.#writeNow()
    else if (this.#writeTimer == null) {
      this.#writeTimer = setTimeout(() => { this.#writeNow() }, this.#c.persistDelayMs ?? PERSIST_DELAY_MS)
      this.#writeTimer.unref()
    }
  }

  /** One write for everything unwritten: the newest put or delete per key (so the two never touch the same key). */
  #writeNow (): void {
    clearTimeout(this.#writeTimer)
    this.#writeTimer = undefined
    if (this.#unwritten.size === 0) return
    const batch = this.#unwritten
    this.#unwritten = new Map()
    const puts: WireEntry[] = []
    const deletes: string[] = []
    for (const [k, e] of batch) {
      if (e == null) deletes.push(k)
      else puts.push(e)
    }
    this.#persisting = this.#persisting
      .then(async () => {
        const store = this.#c.store
        if (deletes.length > 0) await store.delete(deletes)
        if (puts.length > 0) await store.put(puts)
      })
      .catch(err => { this.#c.logger.error({ err }, 'persisting registry entries failed') })
  }
}

/** The first index whose key is not below `key` (keys sorted by `<`). */
function lowerBound (keys: readonly string[], key: string): number {
  let lo = 0
  let hi = keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (keys[mid]! < key) lo = mid + 1
    else hi = mid
  }
  return lo
}
