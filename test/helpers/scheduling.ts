import { readFile } from 'node:fs/promises'
import { loadFleet } from '../../node/identity/fleet.ts'
import { deploymentKey } from '../../node/scheduler/keys.ts'
import { authorizeThrough } from '../../node/cli/fleet-write.ts'
import { anomalyBundleZip, type AnomalyBundleOptions } from './anomaly-bundle.ts'
import type { Cluster } from './cluster.ts'
import type { KeyObject } from 'node:crypto'

/** Publish the anomaly bundle through one agent's API; returns its digest. */
export async function publishAnomalyBundle (cluster: Cluster, via: string, options: Omit<AnomalyBundleOptions, 'under'> = {}): Promise<string> {
  const fleet = await loadFleet(cluster.fleetDir)
  const built = await anomalyBundleZip(fleet.privateKey, { ...options, under: cluster.root })
  const res = await fetch(`${cluster.node(via).api}/v1/bundles`, {
    method: 'POST',
    headers: { 'content-type': 'application/zip', ...await cluster.auth(via) },
    body: await readFile(built.out),
    signal: AbortSignal.timeout(30_000)
  })
  if (!res.ok) throw new Error(`publishing the bundle failed: ${res.status} ${await res.text()}`)
  return built.digest
}

/** A fleet authorisation of one write through agent `via`, as the CLI makes it (asking that agent for the stamp). */
export async function fleetAuth (cluster: Cluster, via: string, key: string, valueJson: string | null, fleetKey: KeyObject): Promise<string> {
  return await authorizeThrough(async (method, path) => await cluster.get(via, path), key, valueJson, { key: fleetKey })
}

/** Sign a deployment spec with the fleet key and write it through one agent, as `gatemesh deploy` does. */
export async function deploy (cluster: Cluster, via: string, spec: Record<string, unknown>): Promise<void> {
  const fleet = await loadFleet(cluster.fleetDir)
  const auth = await fleetAuth(cluster, via, deploymentKey(String(spec.id)), JSON.stringify(spec), fleet.privateKey)
  const res = await cluster.request(via, 'PUT', `/v1/deployments/${String(spec.id)}`, { spec, auth })
  if (res.status !== 200) throw new Error(`deploy ${String(spec.id)} failed: ${res.status} ${JSON.stringify(res.body)}`)
}

export async function undeploy (cluster: Cluster, via: string, id: string): Promise<void> {
  const fleet = await loadFleet(cluster.fleetDir)
  const auth = await fleetAuth(cluster, via, deploymentKey(id), null, fleet.privateKey)
  const res = await cluster.request(via, 'DELETE', `/v1/deployments/${id}`, { auth })
  if (res.status !== 200) throw new Error(`undeploy ${id} failed: ${res.status} ${JSON.stringify(res.body)}`)
}

/** Nodes (by cluster name) where the deployment's instance is running, as `observer` sees it. */
export async function runningOn (cluster: Cluster, observer: string, deployment: string): Promise<string[]> {
  const status = await cluster.get(observer, `/v1/deployments/${deployment}`).catch(() => null)
  if (status == null) return []
  const byPeer = new Map([...cluster.nodes.values()].map(n => [n.peerId, n.name]))
  return (status.instances as Array<{ node: string, state: string }>).filter(i => i.state === 'running').map(i => byPeer.get(i.node) ?? i.node).sort()
}

export async function scheduler (cluster: Cluster, observer: string): Promise<{ leader: string | null, term: number | null, name?: string }> {
  const s = await cluster.get(observer, '/v1/scheduler')
  const name = [...cluster.nodes.values()].find(n => n.peerId === s.leader)?.name
  return { ...s, ...(name == null ? {} : { name }) }
}

export const simulatedSensor = (id: string, measures: string): Record<string, unknown> => ({
  id, type: 'simulated', measures, unit: measures === 'temperature' ? '°C' : 'state', waveform: 'sine', offset: 20, amplitude: 2, periodMs: 20_000, rateHz: 1
})
