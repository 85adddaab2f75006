import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { budget } from '../helpers/budget.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { deploy, fleetAuth, publishAnomalyBundle, runningOn, simulatedSensor } from '../helpers/scheduling.ts'

// two zones of two agents each, separate processes over real TCP on 127.0.0.1:
// health/ and instance/ stay in their zone, everything else reaches everyone,
// and each zone sees the other through its scheduler's summary
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })

const config = {
  // anti-entropy every 2 s, so several rounds cross zones while the test looks
  registry: { syncIntervalMs: 2000 },
  membership: { health: { sampleIntervalMs: 1000, maxIntervalMs: 2000 } },
  zones: { summarySampleMs: 1000, summaryMaxIntervalMs: 3000 }
}
const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
const zoneOf: Record<string, string> = { a1: 'a', a2: 'a', b1: 'b', b2: 'b' }
await cluster.addNode('a1', { role: 'server', labels: { zone: 'a' }, config })
await cluster.addNode('a2', { labels: { zone: 'a' }, config: { ...config, sensors: [simulatedSensor('a2-temp', 'temperature')] } })
await cluster.addNode('b1', { role: 'server', labels: { zone: 'b' }, config })
await cluster.addNode('b2', { labels: { zone: 'b' }, config: { ...config, sensors: [simulatedSensor('b2-temp', 'temperature')] } })
const names = Object.keys(zoneOf)
await Promise.all(names.map(async n => await cluster.start(n)))
const id = (n: string): string => cluster.node(n).peerId

await waitFor(async () => {
  const views = await Promise.all(names.map(async n => await cluster.members(n)))
  return views.every(v => names.every(n => v.get(id(n))?.state === 'alive'))
}, 'all four alive everywhere', 60_000)

/** Registry keys under `prefix` on `observer` (retried: an agent on a loaded machine may answer late). */
const keys = async (observer: string, prefix: string): Promise<string[]> => await waitFor(async () =>
  ((await cluster.get(observer, `/v1/registry?prefix=${prefix}`)).entries as Array<{ key: string }>).map(e => e.key), `${observer}'s ${prefix} keys`, 30_000)

await t.test('an agent keeps its own zone\'s health, instances and scheduler leases, not the other zone\'s', async t => {
  // everyone writes health at least every 2 s: once each zone has its own, the other's had every chance to leak in
  await waitFor(async () => (await Promise.all(names.map(async n => {
    const health = await keys(n, 'health/')
    return names.filter(o => zoneOf[o] === zoneOf[n]).every(o => health.includes(`health/${id(o)}`))
  }))).every(Boolean), 'each agent to hold its zone\'s health entries', 30_000)
  for (const n of ['a1', 'b2']) {
    const put = await cluster.request(n, 'PUT', `/v1/registry/instance/${id(n)}/probe`, { value: { state: 'running', zone: zoneOf[n] } })
    t.equal(put.status, 200, `${n} writes an instance entry`)
  }
  await waitFor(async () => (await keys('a2', 'instance/')).includes(`instance/${id('a1')}/probe`) && (await keys('b1', 'instance/')).includes(`instance/${id('b2')}/probe`), 'each zone\'s instance entry to reach its zone', 20_000)
  // several gossip heartbeats and anti-entropy rounds (2 s) across zones
  await sleep(budget(8000))
  for (const n of names) {
    const stored = [...await keys(n, 'health/'), ...await keys(n, 'instance/'), ...await keys(n, 'scheduler/')]
    const foreign = stored.filter(k => names.some(o => zoneOf[o] !== zoneOf[n] && k.includes(id(o))))
    t.same(foreign, [], `${n} (zone ${zoneOf[n]}) holds no health, instance or scheduler lease entry of the other zone`)
    await waitFor(async () => (await keys(n, `scheduler/${zoneOf[n]}/`)).length > 0, `${n} to hold its own zone's scheduler entries`, 30_000)
    t.ok(stored.includes(`health/${id(n)}`), `${n} holds its own health`)
  }
  const status = await cluster.get('a1', '/v1/status')
  t.match(status.zones, { zone: 'a', followsAll: false, following: ['a'] }, 'status says what a1 keeps')
  const metrics = await (await fetch(`${cluster.node('b1').api}/metrics`)).text()
  t.notOk(/reason="ERR_(WRONG_TOPIC|WRONG_ZONE|OUT_OF_ZONE)"/.test(metrics), 'honest agents never trip the zone checks')
})

await t.test('fleet-wide records reach every zone', async t => {
  const fleet = await loadFleet(cluster.fleetDir)
  const value = { note: 'fleet-wide' }
  const auth = await fleetAuth(cluster, 'b2', 'rollout/zones-probe', JSON.stringify(value), fleet.privateKey)
  const res = await cluster.request('b2', 'PUT', '/v1/registry/rollout/zones-probe', { value, auth })
  t.equal(res.status, 200, 'a fleet-signed write through zone b')
  await waitFor(async () => (await Promise.all(names.map(async n => (await cluster.get(n, '/v1/registry/rollout/zones-probe').catch(() => null))?.value?.note === 'fleet-wide'))).every(Boolean), 'the write on every agent', 20_000)
  for (const n of names) {
    const nodes = await keys(n, 'node/')
    t.ok(names.every(o => nodes.includes(`node/${id(o)}`)), `${n} holds every node record, both zones'`)
  }
  t.pass('a fleet-wide entry reached both zones')
})

await t.test('each zone has its scheduler, and sees the other zone through its summary', async t => {
  const leaders = await waitFor(async () => {
    const views = await Promise.all(names.map(async n => await cluster.get(n, '/v1/scheduler')))
    const ok = views.every((v, i) => v.zone === zoneOf[names[i]!] && v.leader === views[zoneOf[names[i]!] === 'a' ? 0 : 2]!.leader && v.leader != null)
    return ok ? views : null
  }, 'one scheduler per zone, agreed on inside it', 30_000)
  // (usually the servers, a1 and b1; a gateway that claimed while its server was slow to start keeps the zone)
  const [leaderA, leaderB] = [leaders[0].leader as string, leaders[2].leader as string]
  t.ok([id('a1'), id('a2')].includes(leaderA), 'zone a is scheduled from inside zone a')
  t.ok([id('b1'), id('b2')].includes(leaderB), 'zone b is scheduled from inside zone b')

  const seen = await waitFor(async () => {
    const zones = (await cluster.get('a2', '/v1/status')).zones
    const b = zones?.summaries?.find((s: any) => s.zone === 'b')
    return b?.members?.alive === 2 && b.reporting === 2 ? b : null
  }, 'zone b\'s summary seen from zone a', 30_000)
  t.equal(seen.scheduler, leaderB, 'written by zone b\'s scheduler')
  t.equal(seen.current, true, 'the scheduler zone a follows for zone b')
  t.same(seen.members, { alive: 2, suspect: 0, dead: 0 })
  t.ok(typeof seen.cpuPct === 'number' && typeof seen.memoryPct === 'number', `with CPU (${seen.cpuPct} %) and memory (${seen.memoryPct} %) averages`)
  t.equal(seen.instances.running, 1, 'and zone b\'s one running instance (b2\'s probe)')
  const fromB = await waitFor(async () => (await cluster.get('b1', '/v1/status')).zones.summaries.find((s: any) => s.zone === 'a' && s.scheduler === leaderA), 'zone a\'s summary seen from zone b', 30_000)
  t.same(fromB.members, { alive: 2, suspect: 0, dead: 0 }, 'and zone a\'s seen from zone b')
})

await t.test('scheduling per zone still works', async t => {
  await publishAnomalyBundle(cluster, 'a1')
  await deploy(cluster, 'a1', { id: 'in-a', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway', labels: { zone: 'a' } } })
  await deploy(cluster, 'b1', { id: 'in-b', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway', labels: { zone: 'b' } }, instance: { name: 'anomaly-b' } })
  await waitFor(async () => (await runningOn(cluster, 'a1', 'in-a')).join() === 'a2', 'in-a to run on a2', 60_000, 250)
  await waitFor(async () => (await runningOn(cluster, 'b1', 'in-b')).join() === 'b2', 'in-b to run on b2', 60_000, 250)
  t.pass('each zone\'s scheduler placed its deployment in its zone')
  const remote = await cluster.get('a1', '/v1/deployments/in-b')
  t.equal(remote.placement?.scheduler, (await cluster.get('b2', '/v1/scheduler')).leader, 'zone a sees zone b\'s placement (fleet-wide)')
  t.match(remote.instances, [{ node: id('b2'), state: 'unknown' }], 'but not the instance state, which stays in zone b')
  const b = await waitFor(async () => {
    const s = (await cluster.get('a2', '/v1/status')).zones.summaries.find((z: any) => z.zone === 'b')
    return s?.instances?.running === 2 ? s : null
  }, 'zone b\'s summary to count its new instance', 30_000)
  t.equal(b.instances.running, 2, 'zone b\'s summary, seen from a, counts it')
})

await t.test('a predict sent to zone a for a model that runs only in zone b is answered there', async t => {
  // anomaly-b runs on b2 alone; zone a keeps none of zone b's instance entries, only the fleet-wide deployment and placement
  t.same((await keys('a1', 'instance/')).filter(k => k.endsWith('/anomaly-b')), [], 'a1 holds no instance entry of anomaly-b')
  const body = { instances: [scaled(temperatures(21)), scaled(temperatures(21, 15))] }
  for (const n of ['a1', 'a2']) {
    const res = await waitFor(async () => {
      const r = await cluster.request(n, 'POST', '/v1/models/anomaly-b:predict', body)
      return r.status === 200 ? r : null
    }, `${n} to answer a predict for anomaly-b`, 30_000, 500)
    t.equal(res.body.predictions?.length, 2, `${n} relays zone b's answer (two predictions)`)
  }
  const status = await cluster.get('a2', '/v1/models/anomaly-b')
  t.match(status.model_version_status, [{ state: 'AVAILABLE' }], 'and reports the model available in the mesh')
})
