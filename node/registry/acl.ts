/**
 * Who may write a registry key. A node owns the keys that name it (its
 * `node/`, `health/` and `instance/` entries, the scheduler claims and
 * placements it writes as `scheduler/<zone>/<self>` and `placement/<id>/<self>`,
 * its bundle adverts `bundle/<digest>/<self>`, its `release/<self>` and, as a zone's scheduler, the
 * zone's summary `zone/<zone>/<self>`, and whom it follows as its zone's
 * scheduler, `endorse/<zone>/<self>`); every other key needs a
 * fleet authorisation.
 */
export interface OwnershipRule {
  /** first path segment, e.g. `instance` */
  prefix: string
  /** index of the segment holding the owner's peer id */
  ownerSegment: number
  /** the key has exactly this many segments */
  exactSegments?: number
  /** the key has at least this many segments */
  minSegments?: number
}

export type Authority =
  | { kind: 'owner', owner: string }
  | { kind: 'fleet' }

export const DEFAULT_OWNERSHIP_RULES: readonly OwnershipRule[] = [
  { prefix: 'node', ownerSegment: 1, exactSegments: 2 },
  { prefix: 'health', ownerSegment: 1, exactSegments: 2 },
  { prefix: 'instance', ownerSegment: 1, minSegments: 3 },
  // scheduling: each scheduler owns its claim and its placements; readers follow the highest term
  { prefix: 'scheduler', ownerSegment: 2, exactSegments: 3 },
  { prefix: 'placement', ownerSegment: 2, exactSegments: 3 },
  // bundle/<digest>/<peerId>: a provider advertises what it holds; one key per holder, since the registry is last-writer-wins per key
  { prefix: 'bundle', ownerSegment: 2, exactSegments: 3 },
  // release/<peerId>: the agent release a node runs and its progress in a rollout
  { prefix: 'release', ownerSegment: 1, exactSegments: 2 },
  // zone/<zone>/<peerId>: a zone's summary for the other zones, by its scheduler (the zone must be the writer's own)
  { prefix: 'zone', ownerSegment: 2, exactSegments: 3 },
  // endorse/<zone>/<peerId>: whom a member of the zone follows as its scheduler, fleet-wide (the zone must be the writer's own)
  { prefix: 'endorse', ownerSegment: 2, exactSegments: 3 }
]

export function authorityFor (key: string, rules: readonly OwnershipRule[] = DEFAULT_OWNERSHIP_RULES): Authority {
  const segments = key.split('/')
  for (const rule of rules) {
    if (segments[0] !== rule.prefix) continue
    if (rule.exactSegments != null && segments.length !== rule.exactSegments) continue
    if (rule.minSegments != null && segments.length < rule.minSegments) continue
    const owner = segments[rule.ownerSegment]
    if (owner != null) return { kind: 'owner', owner }
  }
  return { kind: 'fleet' }
}
