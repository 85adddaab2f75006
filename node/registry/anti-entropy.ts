import { answerSync, SYNC_PROTOCOL, syncWith, type SyncReplica, type SyncResult } from '../../protocols/registry-sync/index.ts'
import { BucketDigests } from './bucket-digests.ts'
import { UnknownWriterError } from './errors.ts'
import type { RegistryComponents, RegistryMetrics, WriterTrust } from './registry.ts'
import type { Refusals } from './refusals.ts'
import type { Replica } from './replica.ts'
import type { Retention } from './retention.ts'
import type { SharedZones, ZoneScope } from './zone-scope.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'

export const DEFAULT_SYNC_INTERVAL_MS = 15_000

export interface AntiEntropyComponents {
  network: RegistryComponents['network']
  trust: Pick<WriterTrust, 'isVerified' | 'verifiedPeers'>
  scope: ZoneScope
  replica: Pick<Replica, 'values' | 'bucketVersion' | 'inBucket'>
  retention: Pick<Retention, 'horizon' | 'expired'>
  refusals: Pick<Refusals, 'refuse'>
  /** verify and merge what a peer sent (the registry's `merge`) */
  merge: (entries: WireEntry[], shared: SharedZones) => Promise<unknown>
  /** an exchange with `peer` finished */
  synced: (peer: string, result: SyncResult) => void
  logger: Logger
  metrics?: Pick<RegistryMetrics, 'synced'>
}

export interface AntiEntropyInit {
  /** Anti-entropy with one random verified peer this often. @default DEFAULT_SYNC_INTERVAL_MS */
  syncIntervalMs?: number
}

/**
 * The registry's anti-entropy over the sync protocol: rounds this node
 * starts (one random verified peer every `syncIntervalMs`, and on demand)
 * and rounds peers start with it. An exchange covers the fleet-wide
 * entries and the zone-local ones of the zones both sides follow.
 */
export class AntiEntropy {
  readonly #c: AntiEntropyComponents
  readonly #syncIntervalMs: number
  readonly #digests: BucketDigests
  #syncRounds = 0
  #syncTimer?: NodeJS.Timeout

  constructor (components: AntiEntropyComponents, init: AntiEntropyInit = {}) {
    this.#c = components
    this.#syncIntervalMs = init.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS
    this.#digests = new BucketDigests(components.replica)
  }

  /** Answer peers' rounds and start this node's own. */
  async start (): Promise<void> {
    await this.#c.network.handle(SYNC_PROTOCOL, this.#answerSync, { maxInboundStreams: 8 })
    this.#syncTimer = setInterval(() => { this.#syncRandomPeer() }, this.#syncIntervalMs)
    this.#syncTimer.unref()
  }

  /** Start no more rounds of this node's own. */
  pause (): void {
    clearInterval(this.#syncTimer)
  }

  /** Stop answering peers too. */
  async stop (): Promise<void> {
    this.pause()
    await this.#c.network.unhandle(SYNC_PROTOCOL)
  }

  /** Run one anti-entropy round with `peer`: the fleet-wide entries and those of the zones we both follow. */
  async syncWith (peer: PeerId, signal?: AbortSignal): Promise<SyncResult> {
    const stream = await this.#c.network.dialProtocol(peer, SYNC_PROTOCOL, { signal })
    const result = await syncWith(stream, this.#syncReplicaFor(peer.toString()), { signal })
    this.#c.metrics?.synced(result)
    this.#c.synced(peer.toString(), result)
    return result
  }

  /** What an exchange with a peer sharing `shared` covers: unexpired, and zone-local only of shared zones. */
  * #offered (shared: SharedZones): Generator<WireEntry> {
    const offers = this.#offers(shared)
    for (const e of this.#c.replica.values()) if (offers(e)) yield e
  }

  #offers (shared: SharedZones): (e: WireEntry) => boolean {
    const horizon = this.#c.retention.horizon()
    return e => !this.#c.retention.expired(e, horizon) && this.#c.scope.offers(e, shared)
  }

  /**
   * The replica as one exchange with `peer` sees it. Both sides compute the
   * same shared zones from the two certificates, so their digests cover the
   * same keys; what peers would refuse as expired is not offered, nor
   * counted in the digests.
   */
  #syncReplicaFor (peer: string): SyncReplica {
    const { name, zones: shared } = this.#c.scope.shared(peer)
    return {
      entries: () => this.#offered(shared),
      digests: () => this.#digests.digests(name, this.#offers(shared)),
      merge: async (entries) => { await this.#c.merge(entries, shared) }
    }
  }

  readonly #answerSync = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    if (!this.#c.trust.isVerified(peer)) {
      this.#c.refusals.refuse({ code: 'ERR_UNVERIFIED_SOURCE' })
      stream.abort(new UnknownWriterError(`${peer} has not presented a certificate`))
      return
    }
    try {
      const result = await answerSync(stream, this.#syncReplicaFor(peer))
      this.#c.metrics?.synced(result)
      this.#c.synced(peer, result)
    } catch (err: any) {
      this.#c.refusals.refuse(err)
      this.#c.logger.debug({ peer, err: err.message }, 'answering registry sync failed')
    }
  }

  /**
   * Every other round with a peer that shares a zone with us (zone-local
   * entries are repaired only there), the rounds between with any peer
   * (fleet-wide entries across zones).
   */
  #syncRandomPeer (): void {
    const all = this.#c.trust.verifiedPeers()
    const zonal = this.#syncRounds++ % 2 === 0 ? all.filter(p => this.#zoneSharedWith(p.toString())) : []
    const peers = zonal.length > 0 ? zonal : all
    if (peers.length === 0) return
    const peer = peers[Math.floor(Math.random() * peers.length)]!
    this.syncWith(peer).catch(err => { this.#c.logger.debug({ peer: peer.toString(), err: err.message }, 'registry sync failed') })
  }

  /** Whether an exchange with `peer` covers some zone's zone-local entries. */
  #zoneSharedWith (peer: string): boolean {
    const shared = this.#c.scope.sharedWith(peer)
    if (!this.#c.scope.followsAll) return shared(this.#c.scope.zone)
    const zone = this.#c.scope.writerZone(peer)
    return zone != null && shared(zone)
  }
}
