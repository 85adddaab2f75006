import { REGISTRY_TOPIC } from './delta.ts'

/**
 * Zones of the registry: which keys are gossiped and kept only inside one
 * zone, and the topics they travel on. Every agent of a fleet must agree on
 * this, so it is part of the protocol, not configuration.
 *
 * A node's zone is the `zone` label of its certificate (one `default` zone
 * when it has none), never what a message says. Zone-local keys are the
 * per-node state that changes often and that only the node's zone acts on:
 * `health/<peer>` (placement, autoscaling, the zone's dashboard figures),
 * `instance/<peer>/<name>` (the zone's scheduler and reconcilers, and
 * predict routing to the zone's replicas) and `scheduler/<zone>/<peer>`
 * (the zone's election: a lease renewed twice a second and the members'
 * endorsements). Everything else is fleet-wide: `node/<peer>` carries the
 * certificate every entry is checked against, `placement/` says where every
 * deployment runs, `bundle/` providers serve every zone, `release/` and
 * `rollout/` are fleet rollouts, `deployment/` and `revoked/` are the
 * fleet's, and `zone/<zone>/<scheduler>` is how other zones see this one,
 * its scheduler and term included (which placements of the zone count),
 * and `endorse/<zone>/<peer>` is whom each member of a zone follows as its
 * scheduler (rewritten only when that changes), so other zones believe a
 * summary only from a scheduler a majority of its zone endorses.
 */
export const ZONE_LOCAL_PREFIXES: readonly string[] = ['health/', 'instance/', 'scheduler/']

/** Zone of a node or deployment: its `zone` label, or one default zone (an empty label too: it names no zone). */
export const DEFAULT_ZONE = 'default'
export const zoneOf = (labels: Record<string, string> | undefined): string => labels?.zone == null || labels.zone === '' ? DEFAULT_ZONE : labels.zone

/** Whether a key is zone-local (kept and gossiped in its owner's zone only). */
export const isZoneLocal = (key: string): boolean => ZONE_LOCAL_PREFIXES.some(p => key.startsWith(p))

const ZONE_TOPIC_PREFIX = `${REGISTRY_TOPIC}/zone/`

/** The gossipsub topic of one zone's zone-local deltas. */
export const zoneTopic = (zone: string): string => `${ZONE_TOPIC_PREFIX}${zone}`

/** The zone a topic carries, or undefined for the fleet topic (and anything else). */
export function zoneOfTopic (topic: string): string | undefined {
  if (!topic.startsWith(ZONE_TOPIC_PREFIX)) return undefined
  const zone = topic.slice(ZONE_TOPIC_PREFIX.length)
  return zone === '' ? undefined : zone
}

/** Where a writer in `writerZone` publishes an entry of `key`. */
export const topicFor = (key: string, writerZone: string): string => isZoneLocal(key) ? zoneTopic(writerZone) : REGISTRY_TOPIC

/** `zone/<zone>/<peer>`: the zone's summary, written by its scheduler. */
export const REGISTRY_ZONE_SEGMENT = 'zone'
export const ZONE_SUMMARY_PREFIX = `${REGISTRY_ZONE_SEGMENT}/`
export const zoneSummaryKey = (zone: string, peer: string): string => `${ZONE_SUMMARY_PREFIX}${zone}/${peer}`

/** `endorse/<zone>/<peer>`: whom a member of the zone follows as its scheduler, and that scheduler's term. */
export const REGISTRY_ENDORSE_SEGMENT = 'endorse'
export const ENDORSE_PREFIX = `${REGISTRY_ENDORSE_SEGMENT}/`
export const endorseKey = (zone: string, peer: string): string => `${ENDORSE_PREFIX}${zone}/${peer}`
