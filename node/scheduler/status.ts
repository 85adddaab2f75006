import { instanceKey } from './keys.ts'
import { zoneOf } from './keys.ts'
import { winningPlacement, type PlacementAuthority } from './placements.ts'
import { updating, type UpdateAttempt, type ModelUpdate } from './model-update.ts'
import { instanceName, readDeployments } from './scheduler.ts'
import { activePeriod } from './window.ts'
import type { DeploymentSpec, ParseOptions } from './spec.ts'
import type { Registry } from '../registry/registry.ts'

export interface InstanceStatus {
  node: string
  state: string
  reason?: string
  /** the model version and bundle it runs (or tries to) */
  version?: string
  bundle?: string
  /** during a model update: the new instance starting beside the running one, or why it failed */
  next?: { version?: string, bundle?: string, state: string, reason?: string }
}

/** A model update as the deployment's status shows it. */
export interface ModelUpdateStatus {
  phase: ModelUpdate['phase']
  from: { bundle: string, version?: string }
  to: { bundle: string, version?: string }
  /** nodes switched to `to` so far, of `of` (while in progress) */
  step: number
  of: number
  updated: string[]
  canary: { replicas: number, state: 'none' | 'starting' | 'watching' | 'passed' | 'failed' | 'ended', since?: string, until?: string }
  reason?: string
  history: UpdateAttempt[]
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
  /** the current or last model update; null when the model never changed */
  update: ModelUpdateStatus | null
}

/** Deployments with their placement, window and per-node instance states, from the registry. */
export function deploymentStatuses (registry: Pick<Registry, 'list' | 'get' | 'value'>, authority: PlacementAuthority, options: ParseOptions = {}, now = Date.now(), liveness?: (peerId: string) => string, keeps?: (peerId: string) => boolean): DeploymentStatus[] {
  // one pass over the instance entries, not one per deployment
  const hosts = new Map<string, string[]>()
  for (const e of registry.list('instance/')) {
    const [, node, name] = e.key.split('/')
    if (node != null && name != null) hosts.set(name, [...(hosts.get(name) ?? []), node])
  }
  return [...readDeployments(registry, options)].map(([id, { spec }]) => deploymentStatus(registry, authority, id, spec, hosts.get(instanceName(spec)) ?? [], now, liveness, keeps))
}

/**
 * One deployment's status: its winning placement, its window at `now`, and
 * the state of its instance on each node it is placed on or that `hosts`
 * (the nodes with an `instance/<node>/<its instance name>` entry) names.
 * An agent keeps the instance entries of its own zone only (`keeps`): a
 * node of another zone with no entry here is `unknown`, not `pending`.
 */
export function deploymentStatus (registry: Pick<Registry, 'get' | 'value'>, authority: PlacementAuthority, id: string, spec: DeploymentSpec, hosts: Iterable<string>, now = Date.now(), liveness?: (peerId: string) => string, keeps?: (peerId: string) => boolean): DeploymentStatus {
  const p = winningPlacement(registry, id, authority, zoneOf(spec.placement.labels))
  const name = instanceName(spec)
  const instances: InstanceStatus[] = []
  for (const node of new Set([...(p?.nodes ?? []), ...hosts])) {
    const v = registry.get(instanceKey(node, name))?.value as InstanceEntry | undefined
    if (v != null && v.deployment != null && v.deployment !== id) continue
    // what a dead node last wrote is not what it runs now
    const lost = liveness?.(node) === 'dead'
    const elsewhere = v == null && keeps?.(node) === false
    instances.push({
      node,
      state: lost ? 'lost' : elsewhere ? 'unknown' : (v?.state ?? 'pending'),
      ...(lost ? { reason: 'node is dead' } : elsewhere ? { reason: 'another zone: its instance states stay in that zone (see the zone summaries, or ask the coordinator)' } : v?.reason == null ? {} : { reason: String(v.reason) }),
      ...strings(v, ['version', 'bundle']),
      ...(lost || v?.next == null || typeof v.next.state !== 'string' ? {} : { next: { state: v.next.state, ...strings(v.next, ['version', 'bundle', 'reason']) } })
    })
  }
  const period = activePeriod(spec, now)
  return {
    id,
    spec,
    placement: p == null ? null : { scheduler: p.scheduler, term: p.term, nodes: p.nodes, replicas: p.replicas, bundle: p.bundle },
    window: { active: period.active, nextChange: period.nextChange == null ? null : new Date(period.nextChange).toISOString() },
    instances,
    running: instances.filter(i => i.state === 'running').length,
    update: p?.update == null ? null : updateStatus(p.update, p.nodes.length, spec)
  }
}

function updateStatus (u: ModelUpdate, of: number, spec: DeploymentSpec): ModelUpdateStatus {
  const iso = (ms: number): string => new Date(ms).toISOString()
  const canaryUntil = u.canaryAt == null ? undefined : u.canaryAt + (spec.canary?.durationSec ?? 0) * 1000
  const canary: ModelUpdateStatus['canary'] = { replicas: u.canary, state: canaryState(u) }
  if (u.phase === 'canary' && u.canaryAt != null) Object.assign(canary, { since: iso(u.canaryAt), until: iso(canaryUntil!) })
  return {
    phase: u.phase,
    from: { bundle: u.from, ...(u.fromVersion == null ? {} : { version: u.fromVersion }) },
    to: { bundle: u.to, ...(u.toVersion == null ? {} : { version: u.toVersion }) },
    step: updating(u) ? u.updated.length : 0,
    of,
    updated: u.updated.map(x => x.node),
    canary,
    ...(u.reason == null ? {} : { reason: u.reason }),
    history: u.history
  }
}

function canaryState (u: ModelUpdate): ModelUpdateStatus['canary']['state'] {
  if (u.canary === 0) return 'none'
  if (u.phase === 'canary') return u.canaryAt == null ? 'starting' : 'watching'
  if (u.canaryPassedAt != null) return 'passed'
  return u.phase === 'rolled-back' ? 'failed' : 'ended'
}

interface InstanceEntry {
  state?: string
  reason?: unknown
  deployment?: string
  version?: unknown
  bundle?: unknown
  next?: { state?: unknown, version?: unknown, bundle?: unknown, reason?: unknown }
}

/** The string fields of `v` among `keys` (an entry is whatever its writer sent). */
function strings (v: object | undefined, keys: string[]): Record<string, string> {
  const out: Record<string, string> = {}
  const r = v as Record<string, unknown> | undefined
  for (const k of keys) if (typeof r?.[k] === 'string') out[k] = (r[k] as string).slice(0, 512)
  return out
}
