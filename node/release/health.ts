import type { Handover } from './state.ts'

/** What the health check looks at, each from the part of the agent that knows. */
export interface HealthInputs {
  handover?: Handover
  /** peers connected and through the certificate exchange */
  verifiedPeers: number
  /** peers this node's membership judges alive */
  alivePeers: number
  /** an anti-entropy round with a peer completed since the agent started: it has the mesh's state, and the peer ours */
  synced: boolean
  /** this node's model instances by name, and their state */
  instances: Map<string, string>
  /** whether the winning placement of a deployment still names this node (the scheduler may have moved it while the node restarted) */
  placedHere: (deployment: string) => boolean
}

export interface HealthCheck {
  healthy: boolean
  /** one line, for the loader's rollback reason and the registry */
  note: string
  checks: Array<{ name: 'mesh' | 'peers' | 'instances', ok: boolean, detail: string }>
}

/**
 * A new release proves itself: it joined the mesh (a verified connection
 * and a registry sync), it is alive to its peers (membership sees them
 * alive, so they hear it too), and the model instances that ran before the
 * restart run again. A node that was alone before is not asked for peers.
 */
export function checkHealth (input: HealthInputs): HealthCheck {
  const expectPeers = (input.handover?.peers ?? 1) > 0
  const checks: HealthCheck['checks'] = []
  if (expectPeers) {
    checks.push({
      name: 'mesh',
      ok: input.verifiedPeers > 0 && input.synced,
      detail: input.verifiedPeers === 0 ? 'no verified peer connection' : input.synced ? `${input.verifiedPeers} verified peers, registry synced` : 'connected, registry not synced yet'
    })
    checks.push({ name: 'peers', ok: input.alivePeers > 0, detail: input.alivePeers > 0 ? `${input.alivePeers} peers alive` : 'no peer alive' })
  }
  // an instance a placement started is expected back only where the placement still puts it
  const wanted = (input.handover?.instances ?? []).filter(i => i.deployment == null || input.placedHere(i.deployment)).map(i => i.name)
  const notRunning = wanted.filter(n => input.instances.get(n) !== 'running')
  checks.push({
    name: 'instances',
    ok: notRunning.length === 0,
    detail: notRunning.length === 0
      ? `${wanted.length} instances running again`
      : `not running: ${notRunning.slice(0, 8).map(n => `${n} (${input.instances.get(n) ?? 'absent'})`).join(', ')}`
  })
  const healthy = checks.every(c => c.ok)
  const note = healthy ? checks.map(c => c.detail).join('; ') : checks.filter(c => !c.ok).map(c => c.detail).join('; ')
  return { healthy, note, checks }
}
