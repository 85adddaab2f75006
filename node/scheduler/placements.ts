import { deploymentKey, placementKey, zoneOf } from './keys.ts'
import { parseModelUpdate, type ModelUpdate } from './model-update.ts'
import { comparePrecedence } from './precedence.ts'
import type { Leader } from './leader.ts'
import type { Registry } from '../registry/registry.ts'

/** What a scheduler writes under `placement/<deploymentId>/<schedulerPeerId>`. */
export interface PlacementRecord {
  /** the writing scheduler's term; it counts only while that scheduler led with this term */
  term: number
  /** peer ids that should run the deployment */
  nodes: string[]
  replicas: number
  /** digest of the bundle the deployment runs; during a model update, what the nodes not yet switched run */
  bundle: string
  /** the deployment's model update, in progress or the last one (with its history) */
  update?: ModelUpdate
  /** timestamp of the deployment entry this placement was computed for */
  deploymentTs: [number, number]
  /** last autoscaling change, wall-clock ms */
  scaledAt?: number
  at: number
}

export interface WinningPlacement extends PlacementRecord {
  deploymentId: string
  scheduler: string
}

/**
 * Who may place, as this node sees it: the scheduler it follows in a zone,
 * and the ones it followed before. The election provides it.
 */
export interface PlacementAuthority {
  leaderOf(zone: string): Leader | undefined
  followed(zone: string): readonly Leader[]
}

const MAX_NODES = 1000

/** A placement value from the registry, checked before anything reads it. */
export function parsePlacement (value: unknown): PlacementRecord | undefined {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const v = value as Partial<PlacementRecord>
  if (!Number.isSafeInteger(v.term) || !Array.isArray(v.nodes) || v.nodes.length > MAX_NODES || !v.nodes.every(n => typeof n === 'string')) return undefined
  if (typeof v.bundle !== 'string' || !Number.isSafeInteger(v.replicas)) return undefined
  if (v.update !== undefined && parseModelUpdate(v.update) == null) return undefined
  return v as PlacementRecord
}

/** The zone a deployment is scheduled in, from its entry (whatever the entry holds). */
export function deploymentZone (registry: Pick<Registry, 'value'>, deploymentId: string): string {
  const spec = registry.value<{ placement?: { labels?: Record<string, unknown> } }>(deploymentKey(deploymentId))
  const zone = spec?.placement?.labels?.zone
  return zoneOf(typeof zone === 'string' ? { zone } : undefined)
}

/**
 * The placement agents follow for one deployment. A placement counts only
 * when its writer held the zone's scheduler lease with exactly the term it
 * carries: first the current scheduler's own placement; until it has
 * written one, those of the schedulers this node followed before, in
 * precedence order (so a hand-over never stops what runs). Anything else —
 * a node that never led, a term it never held — is ignored, whatever its
 * term says.
 */
export function winningPlacement (registry: Pick<Registry, 'value'>, deploymentId: string, authority: PlacementAuthority, zone = deploymentZone(registry, deploymentId)): WinningPlacement | undefined {
  const leader = authority.leaderOf(zone)
  const candidates = [...authority.followed(zone)].sort(comparePrecedence)
  if (leader != null) candidates.unshift(leader)
  for (const l of candidates) {
    const p = parsePlacement(registry.value(placementKey(deploymentId, l.peerId)))
    if (p != null && p.term === l.term) return { ...p, deploymentId, scheduler: l.peerId }
  }
  return undefined
}

/** Every deployment id this node has written a placement for. */
export function placedBy (registry: Pick<Registry, 'list'>, peerId: string): string[] {
  return registry.list('placement/').flatMap(e => {
    const [, id, writer] = e.key.split('/')
    return writer === peerId && id != null ? [id] : []
  })
}
