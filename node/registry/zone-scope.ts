import { isZoneLocal, REGISTRY_ENDORSE_SEGMENT, REGISTRY_ZONE_SEGMENT, zoneOf, zoneOfTopic } from '../../protocols/registry/zones.ts'
import { OutOfZoneError, WrongTopicError, WrongZoneError } from './errors.ts'
import type { WriterTrust } from './registry.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

/** Which zones' zone-local entries two peers exchange: a predicate on zone names. */
export type SharedZones = (zone: string) => boolean

/**
 * Which zone-local entries (`health/`, `instance/`) this node keeps, gossips
 * and syncs, all decided from certificates: a node's zone is its
 * certificate's `zone` label, and an entry's zone is its writer's (a node
 * owns its zone-local keys). An agent follows its own zone; a coordinator
 * (role from its certificate) follows every zone. Two peers exchange in
 * anti-entropy the fleet-wide entries and the zone-local ones of the zones
 * both follow, which each side computes alike from the two certificates.
 */
export class ZoneScope {
  readonly #self: string
  readonly #trust: Pick<WriterTrust, 'claimsFor'>

  constructor (self: string, trust: Pick<WriterTrust, 'claimsFor'>) {
    this.#self = self
    this.#trust = trust
  }

  /** This node's zone, from its certificate (read each time: a renewal may move it). */
  get zone (): string {
    return zoneOf(this.#trust.claimsFor(this.#self)?.labels)
  }

  /** A coordinator follows every zone. */
  get followsAll (): boolean {
    return this.#trust.claimsFor(this.#self)?.role === 'coordinator'
  }

  follows (zone: string): boolean {
    return this.followsAll || zone === this.zone
  }

  /** The zone of a writer, from its certificate; undefined while we hold none. */
  writerZone (writer: string): string | undefined {
    const claims = this.#trust.claimsFor(writer)
    return claims == null ? undefined : zoneOf(claims.labels)
  }

  /** Zones whose zone-local entries this node and `peer` exchange. */
  sharedWith (peer: string): SharedZones {
    return this.shared(peer).zones
  }

  /** `sharedWith`, and a name for it: peers of the same name share the same zones with this node. */
  shared (peer: string): { name: string, zones: SharedZones } {
    const claims = this.#trust.claimsFor(peer)
    if (claims == null) return { name: 'none', zones: () => false }
    const peerAll = claims.role === 'coordinator'
    const peerZone = zoneOf(claims.labels)
    if (this.followsAll) return peerAll ? { name: 'all', zones: () => true } : { name: `zone:${peerZone}`, zones: z => z === peerZone }
    const own = this.zone
    return peerAll || peerZone === own ? { name: `zone:${own}`, zones: z => z === own } : { name: 'none', zones: () => false }
  }

  /** Whether this node keeps `e`: fleet-wide, or zone-local of a zone it follows (or of a writer not known yet). */
  keeps (e: Pick<WireEntry, 'k' | 'w'>): boolean {
    if (!isZoneLocal(e.k)) return true
    const zone = this.writerZone(e.w)
    return zone == null || this.follows(zone)
  }

  /** Whether `e` goes into an exchange with a peer sharing `shared`. */
  offers (e: Pick<WireEntry, 'k' | 'w'>, shared: SharedZones): boolean {
    if (!isZoneLocal(e.k)) return true
    const zone = this.writerZone(e.w)
    return zone != null && shared(zone)
  }

  /** An entry a peer sent in anti-entropy: a zone-local one must be of a zone we share with it. Throws OutOfZoneError. */
  checkSynced (e: Pick<WireEntry, 'k' | 'w'>, shared: SharedZones): void {
    if (!isZoneLocal(e.k)) return
    const zone = this.writerZone(e.w)
    // an unknown writer is the verifier's to refuse
    if (zone != null && !shared(zone)) throw new OutOfZoneError(`${e.k}: an entry of zone ${zone}, which this exchange does not share`)
  }

  /**
   * An entry of a delta on `topic`: zone-local ones only on their writer's
   * zone topic, fleet-wide ones only on the fleet topic. Throws
   * WrongTopicError or WrongZoneError. A writer not known yet passes here
   * (the verifier refuses it, and gossip ignores rather than rejects that).
   */
  checkTopic (e: Pick<WireEntry, 'k' | 'w'>, topic: string): void {
    const topicZone = zoneOfTopic(topic)
    const local = isZoneLocal(e.k)
    if (local && topicZone == null) throw new WrongTopicError(`${e.k}: a zone-local entry on the fleet topic`)
    if (!local && topicZone != null) throw new WrongTopicError(`${e.k}: a fleet-wide entry on the topic of zone ${topicZone}`)
    if (!local || topicZone == null) return
    const zone = this.writerZone(e.w)
    if (zone != null && zone !== topicZone) throw new WrongZoneError(`${e.k}: published on the topic of zone ${topicZone}, but ${e.w}'s certificate puts it in zone ${zone}`)
  }
}

/** Keys that name a zone in their second segment: what their writer says about (or does in) that zone. */
const ZONE_NAMING = new Map([[REGISTRY_ZONE_SEGMENT, 'a summary'], ['scheduler', 'a scheduler claim or endorsement'], [REGISTRY_ENDORSE_SEGMENT, 'an endorsement']])

/**
 * A `zone/<zone>/<peer>` summary, a `scheduler/<zone>/<peer>` claim or an
 * `endorse/<zone>/<peer>` endorsement must name its writer's zone (a node schedules and summarises only its own).
 * Throws WrongZoneError.
 */
export function checkKeyZone (key: string, writerZone: string): void {
  const segments = key.split('/')
  const what = ZONE_NAMING.get(segments[0] ?? '')
  if (what == null) return
  if (segments[1] !== writerZone) throw new WrongZoneError(`${key}: ${what} of zone ${segments[1] ?? '?'} by a node of zone ${writerZone}`)
}
