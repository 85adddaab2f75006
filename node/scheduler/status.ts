import { instanceKey } from './keys.ts'
import { zoneOf } from './keys.ts'
import { winningPlacement, type PlacementAuthority } from './placements.ts'
import { instanceName, readDeployments } from './scheduler.ts'
import { activePeriod } from './window.ts'
import type { DeploymentSpec, ParseOptions } from './spec.ts'
import type { Registry } from '../registry/registry.ts'

export interface InstanceStatus {
  node: string
  state: string
  reason?: string
}

/** A deployment as `gatemesh deployments` and the coordinator show it. */
export interface DeploymentStatus {
  id: string
  spec: DeploymentSpec
  placement: { scheduler: string, term: number, nodes: string[], replicas: number, bundle: string } | null
  window: { active: boolean, nextChange: string | null }
  instances: InstanceStatus[]
  /** instances in state running */
  running: number
}

/** Deployments with their placement, window and per-node instance states, from the registry. */
export function deploymentStatuses (registry: Pick<Registry, 'list' | 'get' | 'value'>, authority: PlacementAuthority, options: ParseOptions = {}, now = Date.now(), liveness?: (peerId: string) => string): DeploymentStatus[] {
  // one pass over the instance entries, not one per deployment
  const hosts = new Map<string, string[]>()
  for (const e of registry.list('instance/')) {
    const [, node, name] = e.key.split('/')
    if (node != null && name != null) hosts.set(name, [...(hosts.get(name) ?? []), node])
  }
  return [...readDeployments(registry, options)].map(([id, { spec }]) => deploymentStatus(registry, authority, id, spec, hosts.get(instanceName(spec)) ?? [], now, liveness))
}

/**
 * One deployment's status: its winning placement, its window at `now`, and
 * the state of its instance on each node it is placed on or that `hosts`
 * (the nodes with an `instance/<node>/<its instance name>` entry) names.
 */
export function deploymentStatus (registry: Pick<Registry, 'get' | 'value'>, authority: PlacementAuthority, id: string, spec: DeploymentSpec, hosts: Iterable<string>, now = Date.now(), liveness?: (peerId: string) => string): DeploymentStatus {
  const p = winningPlacement(registry, id, authority, zoneOf(spec.placement.labels))
  const name = instanceName(spec)
  const instances: InstanceStatus[] = []
  for (const node of new Set([...(p?.nodes ?? []), ...hosts])) {
    const v = registry.get(instanceKey(node, name))?.value as { state?: string, reason?: string, deployment?: string } | undefined
    if (v != null && v.deployment != null && v.deployment !== id) continue
    // what a dead node last wrote is not what it runs now
    const lost = liveness?.(node) === 'dead'
    instances.push({ node, state: lost ? 'lost' : (v?.state ?? 'pending'), ...(lost ? { reason: 'node is dead' } : v?.reason == null ? {} : { reason: v.reason }) })
  }
  const period = activePeriod(spec, now)
  return {
    id,
    spec,
    placement: p == null ? null : { scheduler: p.scheduler, term: p.term, nodes: p.nodes, replicas: p.replicas, bundle: p.bundle },
    window: { active: period.active, nextChange: period.nextChange == null ? null : new Date(period.nextChange).toISOString() },
    instances,
    running: instances.filter(i => i.state === 'running').length
  }
}
