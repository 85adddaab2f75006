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

export { DEFAULT_ZONE, zoneOf } from '../../protocols/registry/zones.ts'
