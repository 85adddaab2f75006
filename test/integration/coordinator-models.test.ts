import { join } from 'node:path'
import t from 'tap'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { anomalyConfig, anomalyUploadForm } from '../helpers/model-upload.ts'
import { runningOn, simulatedSensor } from '../helpers/scheduling.ts'

// a server and two gateways with temperature sensors, and a coordinator, as separate processes on 127.0.0.1
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
await cluster.addNode('srv', { role: 'server' })
await cluster.addNode('gw1', { labels: { site: 'north' }, config: { sensors: [simulatedSensor('temp', 'temperature')] } })
await cluster.addNode('gw2', { labels: { site: 'south' }, config: { sensors: [simulatedSensor('temp', 'temperature')] } })
const agents = ['srv', 'gw1', 'gw2']
await Promise.all(agents.map(async n => await cluster.start(n)))
coordinator.init.bootstrap = [cluster.node('srv').multiaddr]
await coordinator.start()
const token = await coordinator.login('admin', coordinator.printedPassword()!)
await waitFor(async () => {
  const res = await coordinator.request('GET', '/api/v1/nodes?state=alive', { token })
  return agents.every(n => res.body.nodes.some((m: any) => m.peerId === cluster.node(n).peerId))
}, 'the coordinator to see the three agents alive', 60_000)

const scaled = (x: number[]): number[] => x.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
const body = JSON.stringify({ instances: [scaled(temperatures(21)), scaled(temperatures(21, 15))] })
const predictAt = async (url: string, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body, signal: AbortSignal.timeout(15_000) })
  return { status: res.status, body: await res.json().catch(() => undefined) }
}
const byPeer = (peerId: string): string => [...cluster.nodes.values()].find(n => n.peerId === peerId)?.name ?? peerId
let digest = ''
let watchOn = ''

await t.test('upload a real TF.js model with its config.json through the API', async t => {
  const res = await fetch(`${coordinator.url}/api/v1/models`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
    body: await anomalyUploadForm({ config: anomalyConfig('temp') }),
    signal: AbortSignal.timeout(120_000)
  })
  const model: any = await res.json()
  t.equal(res.status, 201, res.status === 201 ? 'uploaded: 201' : JSON.stringify(model))
  t.match(model, { name: 'anomaly', version: '1.0.0', owner: 'admin', format: 'tfjs-layers', outputs: [{ labels: ['normal', 'anomaly'] }] })
  digest = model.digest
  // the coordinator's embedded agent advertises it; every agent sees that in the registry
  await waitFor(async () => (await cluster.get('gw2', `/v1/registry?prefix=bundle/${digest}/`)).entries?.some((e: any) => e.value?.complete === true && e.value?.name === 'anomaly'), 'the bundle advert to reach the agents', 30_000)
  t.pass(`bundle ${digest.slice(0, 12)}… is advertised in the mesh`)
})

await t.test('deploy it on the gateways through the API: it arrives as a signed bundle and runs', async t => {
  const res = await coordinator.request('POST', '/api/v1/deployments', {
    token,
    body: { id: 'watch', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway', sensorTypes: ['temperature'] } }
  })
  t.equal(res.status, 201, res.status === 201 ? 'deployment created: 201' : JSON.stringify(res.body))
  const status = await waitFor(async () => {
    const d = (await coordinator.request('GET', '/api/v1/deployments/watch', { token })).body
    return d?.running === 1 ? d : undefined
  }, 'watch to run on a gateway', 120_000, 500)
  const instance = status.instances.find((i: any) => i.state === 'running')
  watchOn = byPeer(instance.node)
  t.ok(['gw1', 'gw2'].includes(watchOn), `running on gateway ${watchOn}`)
  t.match(status.placement, { bundle: digest, nodes: [instance.node] }, 'placed by the mesh\'s scheduler with the uploaded bundle')
  const held = await cluster.get(watchOn, `/v1/bundles/${digest}`)
  t.match(held, { state: 'complete', name: 'anomaly', version: '1.0.0', publisher: 'fleet' }, 'the gateway holds the complete, fleet-signed bundle')
  const model = await cluster.get(watchOn, '/v1/models/anomaly')
  t.match(model, { model_version_status: [{ state: 'AVAILABLE' }] })

  const endpoints = status.endpoints as Array<{ node: string, url: string }>
  t.same(endpoints.map(e => byPeer(e.node)).sort(), ['gw1', 'gw2', 'srv'], 'an endpoint on every live agent')
  const viaServer = endpoints.find(e => byPeer(e.node) === 'srv')!
  const p = await predictAt(viaServer.url)
  t.equal(p.status, 200, `predict at ${viaServer.url}`)
  t.ok(p.body.predictions[0][0] > 0.9 && p.body.predictions[1][1] > 0.9, 'normal, then anomaly — answered by the gateway through the server')
  const proxied = await predictAt(status.predict, { authorization: `Bearer ${token}` })
  t.equal(proxied.status, 200, 'and through the coordinator\'s own predict proxy')
  t.same(proxied.body.predictions.length, 2)
})

await t.test('the dashboard\'s lists: models and deployments with live status', async t => {
  const models = await coordinator.request('GET', '/api/v1/models', { token })
  t.match(models.body.models, [{ name: 'anomaly', versions: ['1.0.0'] }])
  const list = await coordinator.request('GET', '/api/v1/deployments', { token })
  t.match(list.body.deployments, [{ id: 'watch', running: 1, createdBy: 'admin' }])
  const monitoring = await coordinator.request('GET', '/api/v1/monitoring/models', { token })
  t.match(monitoring.body.models, [{ model: 'anomaly', states: { running: 1 } }])
})

await t.test('stop the coordinator: the agents keep serving predict and keep their schedule', async t => {
  // a deployment whose window closes only after the coordinator is gone
  const start = Date.now()
  const end = start + 45_000
  const res = await coordinator.request('POST', '/api/v1/deployments', {
    token,
    body: { id: 'shift', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway' }, instance: { name: 'shift' }, window: { start: new Date(start).toISOString(), end: new Date(end).toISOString() } }
  })
  t.equal(res.status, 201, res.status === 201 ? 'deployment created: 201' : JSON.stringify(res.body))
  await coordinator.stop()
  t.equal(coordinator.child?.exitCode, 0, 'the coordinator stopped')
  await waitFor(async () => (await cluster.members('srv')).get(coordinator.runtime!.peerId)?.state === 'dead', 'the agents to see the coordinator dead', 30_000)

  const p = await predictAt(`${cluster.node('srv').api}/v1/models/anomaly:predict`)
  t.equal(p.status, 200, 'predict through the server still answers')
  t.ok(p.body.predictions[1][1] > 0.9)

  const ran = await waitFor(async () => { const r = await runningOn(cluster, 'srv', 'shift'); return r.length > 0 ? r : undefined }, 'shift to run', 60_000, 250)
  t.ok(Date.now() < end, `shift runs on ${ran.join()} inside its window, with no coordinator`)
  await waitFor(async () => (await runningOn(cluster, 'srv', 'shift')).length === 0 && (await fetch(`${cluster.node('srv').api}/v1/models/shift`)).status === 404, 'shift to stop when its window ends', 90_000, 250)
  t.ok(Date.now() >= end, 'shift stopped at the end of its window, not before')

  // the gateway running watch dies: the mesh's own scheduler moves it to the other gateway
  const other = watchOn === 'gw1' ? 'gw2' : 'gw1'
  cluster.kill(watchOn)
  const moved = await waitFor(async () => { const r = await runningOn(cluster, 'srv', 'watch'); return r.join() === other ? r : undefined }, `watch to move to ${other}`, 120_000, 500)
  t.same(moved, [other], `watch rescheduled from ${watchOn} to ${other} without the coordinator`)
  const again = await predictAt(`${cluster.node('srv').api}/v1/models/anomaly:predict`)
  t.equal(again.status, 200, 'predict answers from the new replica')
})
