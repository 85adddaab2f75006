import t from 'tap'
import { budget } from '../helpers/budget.ts'
import { CLI, Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { deploy, fleetAuth, publishAnomalyBundle, runningOn, scheduler, simulatedSensor, undeploy } from '../helpers/scheduling.ts'
import { temperatures, SCALE } from '../helpers/anomaly-bundle.ts'

// five agents, no coordinator: a server, three gateways with temperature sensors, one with a door sensor
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
await cluster.addNode('s1', { role: 'server' })
for (const g of ['g1', 'g2', 'g4']) await cluster.addNode(g, { config: { sensors: [simulatedSensor(`${g}-temp`, 'temperature')] } })
await cluster.addNode('g3', { config: { sensors: [simulatedSensor('g3-door', 'door')] } })
const names = ['s1', 'g1', 'g2', 'g3', 'g4']
await Promise.all(names.map(async n => await cluster.start(n)))
await waitFor(async () => {
  const views = await Promise.all(names.map(async n => await cluster.members(n)))
  return views.every(v => [...v.values()].filter(m => m.state === 'alive').length === names.length)
}, 'all five alive everywhere', 60_000)
await publishAnomalyBundle(cluster, 's1')

const window = (x: number[]): number[] => x.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
const predictVia = async (node: string, model: string): Promise<{ status: number, body: any }> => {
  const res = await fetch(`${cluster.node(node).api}/v1/models/${model}:predict`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances: [window(temperatures(21))] }), signal: AbortSignal.timeout(10_000)
  })
  return { status: res.status, body: await res.json() }
}
const modelStatus = async (node: string, model: string): Promise<number> => (await fetch(`${cluster.node(node).api}/v1/models/${model}`, { signal: AbortSignal.timeout(5000) })).status

await t.test('one scheduler is elected among the agents', async t => {
  await waitFor(async () => {
    const views = await Promise.all(names.map(async n => await scheduler(cluster, n)))
    return views[0]!.leader != null && views.every(v => v.leader === views[0]!.leader && v.term === views[0]!.term)
  }, 'every agent to agree on one scheduler', 30_000)
  const s = await scheduler(cluster, 'g3')
  t.equal(s.name, 's1', 'the server ranks first')
})

await t.test('a windowed deployment runs on a matching gateway only inside its window', async t => {
  // the window opens once the placement is surely written and stays open long enough to start an instance, on a slow machine too
  const start = Date.now() + budget(12_000)
  const end = start + budget(15_000)
  t.equal(await modelStatus('s1', 'anomaly'), 404, 'GET /v1/models/anomaly is 404 before the deployment')
  await deploy(cluster, 'g3', {
    id: 'win',
    model: { name: 'anomaly', version: '1.0.0' },
    placement: { role: 'gateway', sensorTypes: ['temperature'] },
    window: { start: new Date(start).toISOString(), end: new Date(end).toISOString() }
  })
  await waitFor(async () => (await cluster.get('g1', '/v1/deployments/win').catch(() => null))?.placement != null, 'a placement for win', 20_000)
  t.equal(await modelStatus('s1', 'anomaly'), 404, '404 while placed but before the window opens')
  t.same(await runningOn(cluster, 'g1', 'win'), [], 'nothing runs before start')

  const running = await waitFor(async () => { const r = await runningOn(cluster, 's1', 'win'); return r.length > 0 ? r : null }, 'the instance to run after start', 40_000, 200)
  t.ok(Date.now() >= start, 'it started no earlier than the window')
  t.equal(running.length, 1, 'one replica')
  t.ok(['g1', 'g2', 'g4'].includes(running[0]!), `on a gateway with a temperature sensor (${running[0]})`)
  t.equal(await modelStatus('s1', 'anomaly'), 200, 'GET on a node without a replica is 200 inside the window')
  const p = await predictVia('g3', 'anomaly')
  t.equal(p.status, 200, 'predict through another node is forwarded to the replica')
  t.equal(p.body.predictions.length, 1)

  await waitFor(async () => (await runningOn(cluster, 's1', 'win')).length === 0 && await modelStatus('s1', 'anomaly') === 404, 'the instance to stop at the end', 40_000, 200)
  t.ok(Date.now() >= end, 'it stopped no earlier than the end')
  t.equal(await modelStatus(running[0]!, 'anomaly'), 404, '404 on the node that ran it')
  await undeploy(cluster, 's1', 'win')
})

await t.test('pinned placement runs where it is told', async t => {
  await deploy(cluster, 's1', {
    id: 'pin',
    model: { name: 'anomaly', version: '1.0.0' },
    placement: { policy: 'pinned', nodes: [cluster.node('g3').peerId] },
    instance: { name: 'pinned' }
  })
  await waitFor(async () => (await runningOn(cluster, 'g1', 'pin')).join() === 'g3', 'pin to run on g3', 40_000)
  t.same(await runningOn(cluster, 'g4', 'pin'), ['g3'])
  t.equal((await predictVia('g1', 'pinned')).status, 200)
  await undeploy(cluster, 's1', 'pin')
  await waitFor(async () => await modelStatus('g3', 'pinned') === 404, 'pin to stop after undeploy', 30_000)
  t.pass('undeploy stops it')
})

await t.test('failover: the scheduler and a replica node die, instances run again elsewhere', async t => {
  await deploy(cluster, 'g1', { id: 'ha', model: { name: 'anomaly', version: '1.0.0' }, replicas: 2, placement: { policy: 'spread' }, instance: { name: 'ha' } })
  const before = await waitFor(async () => { const r = await runningOn(cluster, 'g1', 'ha'); return r.length === 2 ? r : null }, 'two replicas of ha', 60_000)
  // the scheduler every node agrees on: usually s1 (the server ranks
  // first), but a loaded machine can miss heartbeats, and a gateway that
  // claimed meanwhile keeps the zone with its higher term when s1 is back
  const old = await waitFor(async () => {
    const views = await Promise.all(names.map(async n => await scheduler(cluster, n)))
    return views.every(v => v.name != null && v.leader === views[0]!.leader && v.term === views[0]!.term) ? views[0]! : null
  }, 'one scheduler seen by all', 60_000)
  const gone = old.name!
  t.pass(`scheduler ${gone}, term ${old.term}`)
  cluster.kill(gone)
  const survivors = names.filter(n => n !== gone)
  await waitFor(async () => {
    const views = await Promise.all(survivors.map(async n => await scheduler(cluster, n)))
    return views.every(v => v.leader != null && v.leader !== old.leader && v.leader === views[0]!.leader && (v.term ?? 0) > (old.term ?? 0))
  }, 'a new scheduler with a higher term on every survivor', 30_000)
  const now = await scheduler(cluster, survivors[0]!)
  t.not(now.name, gone, `new scheduler ${now.name}, term ${now.term}`)
  const after = await waitFor(async () => { const r = await runningOn(cluster, survivors[0]!, 'ha'); return r.length === 2 && !r.includes(gone) ? r : null }, 'ha back to two replicas on survivors', 60_000)
  t.pass(`replicas ${before.join(',')} → ${after.join(',')}`)

  const victim = after.find(n => n !== now.name) ?? after[0]!
  cluster.kill(victim)
  const rest = survivors.filter(n => n !== victim)
  const third = await waitFor(async () => { const r = await runningOn(cluster, rest[0]!, 'ha'); return r.length === 2 && !r.includes(victim) && !r.includes(gone) ? r : null }, `ha to replace ${victim}`, 60_000)
  t.pass(`after killing ${victim}: ${third.join(',')}`)
  const p = await predictVia(rest.find(n => !third.includes(n)) ?? rest[0]!, 'ha')
  t.equal(p.status, 200, 'predict still answers through a node without a replica')
})

await t.test('the CLI deploys peer to peer; drain and evict move instances', async t => {
  const { writeFile } = await import('node:fs/promises')
  const { join } = await import('node:path')
  const { run } = await import('../helpers/processes.ts')
  const exec = async (...args: string[]): Promise<string> => (await run(process.execPath, [CLI, ...args], { timeoutMs: 120_000 })).stdout
  const alive = [...cluster.running()].map(n => n.name)
  const via = alive[0]!
  const specFile = join(cluster.root, 'cli-spec.json')
  await writeFile(specFile, JSON.stringify({ id: 'cli', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway' }, instance: { name: 'cli' } }))
  t.match(await exec('deploy', specFile, '--key', join(cluster.fleetDir, 'fleet.key'), '--data', cluster.node(via).dir), /deployment cli written/)
  const [where] = await waitFor(async () => { const r = await runningOn(cluster, via, 'cli'); return r.length === 1 ? r : null }, 'cli to run', 60_000)
  const table = await exec('deployments', '--data', cluster.node(via).dir)
  t.match(table, /cli\s+anomaly@1\.0\.0\s+1\s+1/, 'gatemesh deployments lists it running')

  t.match(await exec('evict', 'cli', '--data', cluster.node(where!).dir), /evicted: cli/)
  const [moved] = await waitFor(async () => { const r = await runningOn(cluster, via, 'cli'); return r.length === 1 && r[0] !== where ? r : null }, 'cli to move off the evicting node', 60_000)
  t.pass(`evicted from ${where}, now on ${moved}`)
  await exec('unevict', 'cli', '--data', cluster.node(where!).dir)

  t.match(await exec('drain', '--data', cluster.node(moved!).dir), /drained/)
  const [third] = await waitFor(async () => { const r = await runningOn(cluster, via, 'cli'); return r.length === 1 && r[0] !== moved ? r : null }, 'cli to leave the drained node', 60_000)
  t.pass(`drained ${moved}; cli now on ${third}`)
  t.equal((await cluster.get(moved!, '/v1/instances')).instances.length, 0, 'the drained node runs nothing')
  await exec('undrain', '--data', cluster.node(moved!).dir)

  t.match(await exec('undeploy', 'cli', '--key', join(cluster.fleetDir, 'fleet.key'), '--data', cluster.node(via).dir), /removed/)
  await waitFor(async () => (await runningOn(cluster, via, 'cli')).length === 0, 'cli gone after undeploy', 60_000)
})

await t.test('an unsigned or invalid deployment is refused or ignored and counted', async t => {
  const via = cluster.running()[0]!.name
  const unsigned = await cluster.request(via, 'PUT', '/v1/deployments/bad', { spec: { id: 'bad', model: { name: 'anomaly', version: '1.0.0' } }, auth: 'eyJhbGciOiJFZERTQSJ9.e30.AAAA' })
  t.equal(unsigned.status, 403, 'a bad signature is refused')
  const invalid = await cluster.request(via, 'PUT', '/v1/deployments/bad', { spec: { id: 'bad', model: { name: 'anomaly' }, replicas: -1 }, auth: 'x'.repeat(20) })
  t.equal(invalid.status, 400, 'an invalid spec is refused with the field named')
  t.match(invalid.body.field, /deployment\./)
  // signed but invalid (as an older or foreign writer might produce): ignored by every scheduler and counted
  const { loadFleet } = await import('../../node/identity/fleet.ts')
  const fleet = await loadFleet(cluster.fleetDir)
  const value = { id: 'bad', model: { name: 'anomaly', version: '1.0.0' }, replicas: 0 }
  const auth = await fleetAuth(cluster, via, 'deployment/bad', JSON.stringify(value), fleet.privateKey)
  t.equal((await cluster.request(via, 'PUT', '/v1/registry/deployment/bad', { value, auth })).status, 200, 'the registry takes a signed value')
  await waitFor(async () => {
    const metrics = await (await fetch(`${cluster.node(via).api}/metrics`)).text()
    return /gatemesh_invalid_deployments_total\{[^}]*\} [1-9]/.test(metrics)
  }, 'the invalid deployment to be counted', 20_000)
  t.equal((await cluster.get(via, '/v1/registry?prefix=placement/bad/')).count, 0, 'and never placed')
})
