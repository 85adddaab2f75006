import { comparePrecedence } from './precedence.ts'
import type { Registry } from '../registry/registry.ts'

/** What a scheduler writes under `placement/<deploymentId>/<schedulerPeerId>`. */
export interface PlacementRecord {
  /** the writing scheduler's term; agents follow the highest */
  term: number
  /** peer ids that should run the deployment */
  nodes: string[]
  replicas: number
  /** digest of the bundle the deployment resolved to */
  bundle: string
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

/** The placement agents follow for one deployment: the scheduler that takes precedence (see precedence.ts). */
export function winningPlacement (registry: Pick<Registry, 'list'>, deploymentId: string): WinningPlacement | undefined {
  let best: WinningPlacement | undefined
  for (const e of registry.list<PlacementRecord>(`placement/${deploymentId}/`)) {
    const scheduler = e.key.split('/')[2]
    if (scheduler == null || e.value == null || typeof e.value.term !== 'number' || !Array.isArray(e.value.nodes)) continue
    const candidate = { ...e.value, deploymentId, scheduler }
    if (best == null || comparePrecedence({ term: candidate.term, peerId: scheduler }, { term: best.term, peerId: best.scheduler }) < 0) best = candidate
  }
  return best
}

/** Every deployment id that has at least one placement entry. */
export function placedDeployments (registry: Pick<Registry, 'list'>): string[] {
  return [...new Set(registry.list('placement/').map(e => e.key.split('/')[1]!))]
}
