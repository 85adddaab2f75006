import type { DeploymentSpec } from './spec.ts'

/** A node as placement sees it. */
export interface Candidate {
  peerId: string
  /** suspect nodes keep what they run; only alive ones receive new work */
  state: 'alive' | 'suspect'
  role?: string
  labels: Record<string, string>
  sensorTypes: string[]
  /** machine CPU % from its last heartbeat */
  cpuPct: number
  /** instances it runs now, of any deployment */
  instances: number
  drained: boolean
  /** deployments an operator stopped on this node */
  excluded: string[]
}

/** Whether `node` may run `spec` at all. */
export function eligible (spec: DeploymentSpec, node: Candidate): boolean {
  const p = spec.placement
  if (node.drained || node.excluded.includes(spec.id)) return false
  if (node.role !== 'gateway' && node.role !== 'server') return false
  if (p.role != null && node.role !== p.role) return false
  if (p.nodes != null && p.nodes.length > 0 && !p.nodes.includes(node.peerId)) return false
  for (const [k, v] of Object.entries(p.labels ?? {})) if (node.labels[k] !== v) return false
  for (const type of p.sensorTypes ?? []) if (!node.sensorTypes.includes(type)) return false
  return true
}

const byPeer = (a: Candidate, b: Candidate): number => a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0

/**
 * Choose `replicas` nodes for a deployment. Nodes already running it stay
 * while they remain eligible (moving an instance costs a restart); the rest
 * come from the policy: `pinned` in the order the spec lists, `spread`
 * across distinct `site` labels first, `least-loaded` by instance count and
 * CPU. Deterministic for a given input.
 */
export function choosePlacement (spec: DeploymentSpec, candidates: Candidate[], current: string[], replicas: number): string[] {
  const ok = candidates.filter(c => eligible(spec, c))
  const byId = new Map(ok.map(c => [c.peerId, c]))
  if (spec.placement.policy === 'pinned') {
    // pinned instances never move; a pinned node that is away simply runs nothing until it returns
    return (spec.placement.nodes ?? []).filter(id => byId.has(id)).slice(0, replicas)
  }
  const load = (c: Candidate): number => c.instances * 100 + c.cpuPct
  const kept = current.filter(id => byId.has(id))
    .sort((a, b) => load(byId.get(a)!) - load(byId.get(b)!) || (a < b ? -1 : 1))
    .slice(0, replicas)
  const chosen = [...kept]
  const rest = ok.filter(c => c.state === 'alive' && !chosen.includes(c.peerId))
  while (chosen.length < replicas && rest.length > 0) {
    if (spec.placement.policy === 'spread') {
      const sites = new Map<string, number>()
      for (const id of chosen) {
        const site = byId.get(id)?.labels.site ?? id
        sites.set(site, (sites.get(site) ?? 0) + 1)
      }
      rest.sort((a, b) => (sites.get(a.labels.site ?? a.peerId) ?? 0) - (sites.get(b.labels.site ?? b.peerId) ?? 0) || a.instances - b.instances || byPeer(a, b))
    } else {
      rest.sort((a, b) => a.instances - b.instances || a.cpuPct - b.cpuPct || byPeer(a, b))
    }
    chosen.push(rest.shift()!.peerId)
  }
  return chosen
}
