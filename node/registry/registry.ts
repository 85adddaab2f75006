import { TypedEventEmitter } from '@libp2p/interface'
import { REVOKED_PREFIX, revokedPeerOf, type Revocation } from '../../protocols/registry/revocation.ts'
import { AntiEntropy, DEFAULT_SYNC_INTERVAL_MS } from './anti-entropy.ts'
import type { SyncResult } from '../../protocols/registry-sync/index.ts'
import { DEFAULT_OWNERSHIP_RULES, type OwnershipRule } from './acl.ts'
import { toRegistryEntry, type RegistryEntry } from './entry.ts'
import { InvalidValueError } from './errors.ts'
import { RegistryGossip, type RelayRoute } from './gossip.ts'
import { DEFAULT_MAX_DRIFT_MS, HybridLogicalClock } from './hlc.ts'
import { EntryVerifier } from './ingress.ts'
import { healStoredEntries } from './load.ts'
import { LocalWriter, type WriteStamp } from './local-write.ts'
import { byTrustFirst } from './order.ts'
import { WriterQuotas } from './quota.ts'
import { Refusals } from './refusals.ts'
import { Replica } from './replica.ts'
import { DEFAULT_RETENTION_MS, Retention } from './retention.ts'
import { MAX_DELTA_ENTRIES } from '../../protocols/registry/delta.ts'
import { ChangeFeed, type ChangeListener, type RegistryChange, type RegistryWatch } from './watch.ts'
import { ZoneScope, type SharedZones } from './zone-scope.ts'
import type { RegistryComponents, RegistryEvents, RegistryInit, WriteOptions } from './types.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export { DEFAULT_SYNC_INTERVAL_MS }
/** Most zones a coordinator follows: zones come from fleet-signed certificates, but a bound costs nothing. */
const MAX_FOLLOWED_ZONES = 1024

export type { WriteStamp }
export type { RegistryComponents, RegistryEvents, RegistryInit, RegistryMetrics, WriteOptions, WriterTrust } from './types.ts'


/**
 * The replicated registry: a last-writer-wins map with hybrid logical clock
 * timestamps, signed entries, deltas over gossipsub, anti-entropy over a
 * protocol of ours, and persistence in level. Everything from outside
 * (gossip, sync, and the disk at start) passes the same bounds: value
 * size and depth, the drift limit, the writer's certificate, signature,
 * right to the key and quota, and the fleet's revocations.
 */
export class Registry extends TypedEventEmitter<RegistryEvents> implements Startable {
  readonly #c: RegistryComponents
  readonly #self: string
  readonly #rules: readonly OwnershipRule[]
  readonly #maxDriftMs: number
  readonly #now: () => number
  readonly #feed = new ChangeFeed()
  readonly #quotas: WriterQuotas
  readonly #refusals: Refusals
  readonly #replica: Replica
  readonly #verifier: EntryVerifier
  readonly #gossip: RegistryGossip
  readonly #writer: LocalWriter
  readonly #retention: Retention
  readonly #scope: ZoneScope
  readonly #antiEntropy: AntiEntropy
  #offNodes?: () => void
  #clock: HybridLogicalClock
  #loaded?: Promise<void>
  #sweepTimer?: NodeJS.Timeout
  #sweeping?: Promise<void>
  readonly #log: Logger

  constructor (components: RegistryComponents, init: RegistryInit = {}) {
    super()
    this.#c = components
    this.#self = components.peerId.toString()
    this.#rules = init.rules ?? DEFAULT_OWNERSHIP_RULES
    this.#maxDriftMs = init.maxClockDriftMs ?? DEFAULT_MAX_DRIFT_MS
    this.#now = init.now ?? Date.now
    this.#clock = new HybridLogicalClock({ now: this.#now, maxDriftMs: this.#maxDriftMs })
    this.#log = components.logger
    this.#quotas = new WriterQuotas(init.quota, this.#now)
    this.#retention = new Retention({ retentionMs: init.retentionMs ?? DEFAULT_RETENTION_MS, rules: this.#rules, now: this.#now })
    this.#refusals = new Refusals(this.#log, components.metrics, w => components.trust.claimsFor(w) != null, { now: this.#now })
    this.#scope = new ZoneScope(this.#self, components.trust)
    this.#replica = new Replica({
      store: components.store,
      feed: this.#feed,
      quotas: this.#quotas,
      rules: this.#rules,
      isRevoked: w => components.trust.isRevoked(w),
      expired: e => this.#retention.expired(e),
      onRefused: (err, e) => { this.#refusals.refuse(err, e) },
      logger: this.#log
    })
    this.#verifier = new EntryVerifier({ trust: components.trust, rules: this.#rules, clock: () => this.#clock })
    this.#gossip = new RegistryGossip({
      pubsub: components.pubsub,
      trust: components.trust,
      ...(components.metrics == null ? {} : { metrics: components.metrics }),
      replica: this.#replica,
      verifier: this.#verifier,
      quotas: this.#quotas,
      refusals: this.#refusals,
      scope: this.#scope,
      apply: entries => { this.#applyRemote(entries, 'gossip') },
      logger: this.#log
    })
    this.#writer = new LocalWriter({
      self: this.#self,
      privateKey: components.privateKey,
      fleetPublicKey: components.trust.fleetPublicKey,
      rules: this.#rules,
      clock: () => this.#clock,
      replica: this.#replica,
      gossip: this.#gossip,
      now: this.#now,
      zone: () => this.#scope.zone
    })
    this.#antiEntropy = new AntiEntropy({
      network: components.network,
      trust: components.trust,
      scope: this.#scope,
      replica: this.#replica,
      retention: this.#retention,
      refusals: this.#refusals,
      merge: async (entries, shared) => await this.merge(entries, shared),
      synced: (peer, result) => { this.safeDispatchEvent('synced', { detail: { peer, result } }) },
      logger: this.#log,
      ...(components.metrics == null ? {} : { metrics: components.metrics })
    }, { syncIntervalMs: init.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS })
    // every revocation, however it arrives, is enforced the moment it lands
    this.#feed.onChange(REVOKED_PREFIX, change => {
      const peer = revokedPeerOf(change.key)
      if (peer != null && !change.entry.deleted) this.#enforceRevocation(peer, change.entry.value as Revocation)
    })
  }

  /**
   * Send this node's own writes of relayed keys (health) this way before
   * gossiping them: to its zone's scheduler (`node/registry/relay.ts`).
   * Undefined: gossip them.
   */
  routeRelayed (route: RelayRoute | undefined): void {
    this.#gossip.route(route)
  }

  /**
   * As its zone's scheduler: check a member's own relayed entries as gossip
   * would, install those new to us, and send them with our next write to
   * the zone. Throws a coded error (`ERR_NOT_RELAYED`, a quota, a
   * signature) to refuse; returns how many were new.
   */
  async relayed (entries: WireEntry[], from: string): Promise<number> {
    const fresh = await this.#gossip.relay(entries, from)
    return fresh.length === 0 ? 0 : this.#applyRemote(fresh, 'gossip')
  }

  /**
   * Restore from disk, healing what today's checks refuse, and enforce the
   * revocations found there. Call before the mesh starts so a revoked peer
   * is refused from the first connection; `start` calls it otherwise.
   */
  async load (): Promise<void> {
    this.#loaded ??= this.#load()
    await this.#loaded
  }

  async #load (): Promise<void> {
    const healed = healStoredEntries(await this.#c.store.load(), {
      now: this.#now(),
      maxDriftMs: this.#maxDriftMs,
      rules: this.#rules,
      quotas: this.#quotas,
      self: this.#self,
      expired: e => this.#retention.expired(e)
    })
    this.#replica.restore(healed.entries)
    // resume the clock past this node's own entries (so its next writes supersede them); others' only as far as it adopts
    const clock = new HybridLogicalClock({ now: this.#now, maxDriftMs: this.#maxDriftMs })
    for (const e of healed.entries) {
      if (e.w === this.#self) clock.observeOwn(e.t)
      else clock.observe(e.t)
    }
    this.#clock = clock
    for (const peer of healed.revoked) {
      this.#enforceRevocation(peer, this.value<Revocation>(`${REVOKED_PREFIX}${peer}`))
    }
    if (healed.dropped.length > 0) {
      await this.#c.store.delete(healed.dropped.map(d => d.key))
      const reasons: Record<string, number> = {}
      for (const d of healed.dropped) {
        reasons[d.reason] = (reasons[d.reason] ?? 0) + 1
        this.#c.metrics?.rejected(`ERR_STORED_${d.reason.toUpperCase()}`)
      }
      this.#log.warn({ dropped: healed.dropped.length, reasons, sample: healed.dropped.slice(0, 5).map(d => d.key) }, 'registry healed at load: dropped stored entries that today\'s checks refuse')
    }
  }

  async start (): Promise<void> {
    await this.load()
    this.#gossip.start()
    if (this.#scope.followsAll) {
      // a coordinator follows every zone: those of the nodes it knows, and each new one as it appears
      for (const e of this.#replica.values()) if (e.k.startsWith('node/')) this.#followZoneOf(e.w)
      this.#offNodes = this.#feed.onChange('node/', change => { this.#followZoneOf(change.entry.writer) })
    }
    await this.#antiEntropy.start()
    this.#sweepTimer = setInterval(() => { void this.sweep() }, this.#retention.sweepIntervalMs)
    this.#sweepTimer.unref()
    await this.sweep()
    this.#log.info({ keys: this.#replica.size, clock: this.#clock.peek() }, 'registry loaded')
  }

  async stop (): Promise<void> {
    this.#antiEntropy.pause()
    clearInterval(this.#sweepTimer)
    this.#offNodes?.()
    await this.#sweeping
    this.#gossip.stop()
    await this.#antiEntropy.stop()
    await this.#replica.flushed()
  }

  get size (): number {
    return this.#replica.size
  }

  /** This node's zone (its certificate's `zone` label) and the zones whose zone-local entries it keeps. */
  zones (): { zone: string, followsAll: boolean, following: string[] } {
    return { zone: this.#scope.zone, followsAll: this.#scope.followsAll, following: this.#gossip.zones.sort() }
  }

  /** Whether this node keeps `peer`'s zone-local entries (health, instances): `peer` is of a zone it follows. */
  keepsZoneOf (peer: string): boolean {
    const zone = this.#scope.writerZone(peer)
    return zone != null && this.#scope.follows(zone)
  }

  #followZoneOf (writer: string): void {
    const zone = this.#scope.writerZone(writer)
    if (zone != null && this.#gossip.zones.length < MAX_FOLLOWED_ZONES) this.#gossip.follow(zone)
  }

  get (key: string): RegistryEntry | undefined {
    const e = this.#replica.get(key)
    return e == null ? undefined : toRegistryEntry(e)
  }

  /** The live value of a key; undefined when absent or deleted. */
  value<T = unknown> (key: string): T | undefined {
    const e = this.#replica.get(key)
    return e?.v == null ? undefined : JSON.parse(e.v) as T
  }

  /** Entries under a prefix, tombstones left out unless asked for. */
  list<T = unknown> (prefix = '', options: { tombstones?: boolean } = {}): Array<RegistryEntry<T>> {
    const out: Array<RegistryEntry<T>> = []
    for (const e of this.#replica.withPrefix(prefix)) {
      if (e.v == null && options.tombstones !== true) continue
      out.push(toRegistryEntry<T>(e))
    }
    return out
  }

  /** Every entry as it travels, for anti-entropy and inspection. */
  wireEntries (): IterableIterator<WireEntry> {
    return this.#replica.values()
  }

  /** Keys and bytes a writer holds under the keys it owns, and this node's limits. */
  usage (writer: string): { keys: number, bytes: number, maxKeys: number, maxBytes: number } {
    return { ...this.#quotas.usage(writer), maxKeys: this.#quotas.maxKeys, maxBytes: this.#quotas.maxBytes }
  }

  /** Peers the fleet revoked, with the revocation records. */
  revocations (): Array<Revocation & { peerId: string }> {
    return this.list<Revocation>(REVOKED_PREFIX).flatMap(e => {
      const peerId = revokedPeerOf(e.key)
      return peerId == null || e.value == null ? [] : [{ peerId, ...e.value }]
    })
  }

  /** The writer and timestamp a fleet authorisation for a write of `key` through this node must bind. */
  stampFor (key: string): WriteStamp {
    return this.#writer.stampFor(key)
  }

  async set (key: string, value: unknown, options: WriteOptions = {}): Promise<RegistryEntry> {
    if (value === undefined) throw new InvalidValueError(`${key}: value is undefined; use delete()`)
    let json: string
    try {
      json = JSON.stringify(value)
    } catch (err) {
      throw new InvalidValueError(`${key}: value is not JSON`, { cause: err })
    }
    return await this.#writer.write(key, json, options.auth)
  }

  async delete (key: string, options: WriteOptions = {}): Promise<RegistryEntry> {
    return await this.#writer.write(key, null, options.auth)
  }

  /** Changes under `prefix` as an async iterator. */
  watch (prefix = '', signal?: AbortSignal): RegistryWatch {
    return this.#feed.watch(prefix, signal)
  }

  /** Call `fn` synchronously for every change under `prefix`; returns the unsubscribe function. */
  onChange (prefix: string, fn: ChangeListener): () => void {
    return this.#feed.onChange(prefix, fn)
  }

  /** Run one anti-entropy round with `peer`: the fleet-wide entries and those of the zones we both follow. */
  async syncWith (peer: PeerId, signal?: AbortSignal): Promise<SyncResult> {
    return await this.#antiEntropy.syncWith(peer, signal)
  }

  /**
   * Verify and merge entries from a peer. Entries that would not win are
   * skipped before any crypto; invalid ones are counted and dropped, and so
   * are zone-local entries of zones outside `shared` (by default, those this
   * node does not follow).
   */
  async merge (entries: WireEntry[], shared: SharedZones = z => this.#scope.follows(z)): Promise<{ applied: number, rejected: number }> {
    const fresh: WireEntry[] = []
    let rejected = 0
    for (const e of entries.filter(e => this.#replica.wouldWin(e)).sort(byTrustFirst)) {
      try {
        // the writer's certificate may come in this very batch (node records first), so checked entry by entry
        this.#scope.checkSynced(e, shared)
        this.#replica.admit(e)
        await this.#verifier.verify(e)
        fresh.push(e)
      } catch (err: any) {
        rejected++
        this.#refusals.refuse(err, e)
      }
    }
    return { applied: this.#applyRemote(fresh, 'sync'), rejected }
  }

  /**
   * Write this node's own live entries again before the retention would
   * collect them (at most one delta's worth per sweep; a sweep comes many
   * times per half-life), then collect everything expired. Runs at start
   * and every `Retention.sweepIntervalMs`.
   */
  async sweep (): Promise<void> {
    this.#sweeping ??= this.#sweep().finally(() => { this.#sweeping = undefined })
    await this.#sweeping
  }

  async #sweep (): Promise<void> {
    const due: WireEntry[] = []
    for (const e of this.#replica.values()) {
      if (!this.#retention.due(e, this.#self)) continue
      due.push(e)
      if (due.length === MAX_DELTA_ENTRIES) break
    }
    for (const e of due) {
      await this.#writer.refresh(e).catch(err => { this.#log.warn({ key: e.k, err: err.message }, 'could not write an entry again before its retention ends') })
    }
    const collected = this.#replica.collect()
    // zone-local entries of zones this node does not follow (kept from before zones, or from a zone a renewal moved us out of)
    this.#gossip.refollow()
    const unkept = this.#replica.dropUnkept(e => this.#scope.keeps(e))
    if (due.length > 0 || collected > 0 || unkept > 0) this.#log.debug({ refreshed: due.length, collected, unkept }, 'registry sweep')
  }

  /** Install verified entries from peers and fold their stamps into the clock; returns how many changed state. */
  #applyRemote (entries: WireEntry[], via: RegistryChange['via']): number {
    const changed = this.#replica.install(entries, via)
    for (const e of changed) {
      try {
        if (e.w === this.#self) this.#clock.observeOwn(e.t)
        else this.#clock.observe(e.t)
      } catch {
        // checked at verification; a stamp cannot become invalid since
      }
    }
    return changed.length
  }

  #enforceRevocation (peer: string, record: Revocation | undefined): void {
    if (peer === this.#self) {
      this.#log.error({ reason: record?.reason }, 'the fleet revoked this node\'s certificate: every peer refuses it; re-enroll it with a new identity')
      return
    }
    const reason = `revoked${record?.reason == null || record.reason === '' ? '' : `: ${record.reason}`}`
    this.#c.trust.revoke(peer, reason)
    const dropped = this.#replica.dropWriter(peer)
    this.#log.warn({ peer, reason: record?.reason, by: record?.by, dropped }, 'peer revoked by the fleet: disconnected, refused, and its entries dropped')
  }

}

export function registry (components: RegistryComponents, init?: RegistryInit): Registry {
  return new Registry(components, init)
}
