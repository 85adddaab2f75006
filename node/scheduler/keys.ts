/**
 * Registry keys of scheduling. Placements and scheduler claims are keyed by
 * their writer, so each scheduler owns what it writes and no two writers
 * ever compete for one last-writer-wins register; readers take the entry
 * with the highest term.
 */
export const deploymentKey = (id: string): string => `deployment/${id}`
export const placementKey = (id: string, scheduler: string): string => `placement/${id}/${scheduler}`
export const schedulerKey = (zone: string, peer: string): string => `scheduler/${zone}/${peer}`
export const instanceKey = (peer: string, id: string): string => `instance/${peer}/${id}`

/** Zone of a node or deployment: its `zone` label, or one default zone. */
export const DEFAULT_ZONE = 'default'
export const zoneOf = (labels: Record<string, string> | undefined): string => labels?.zone ?? DEFAULT_ZONE
