import t from 'tap'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { start } from '../helpers/processes.ts'
import { deploy, publishAnomalyBundle } from '../helpers/scheduling.ts'

// Issue 14 item 1: a gateway whose certificate says `gateway` with no labels
// writes `role: server, labels: {site: north}` into its own node record. It
// speaks the real protocols (registry, SWIM membership) with a valid
// certificate. Peers must not believe the record.
const ROGUE = new URL('../helpers/rogue.ts', import.meta.url).pathname

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
await cluster.addNode('srv', { role: 'server' })
await cluster.addNode('gw')
const names = ['srv', 'gw']
for (const n of names) await cluster.start(n, { wait: false })
for (const n of names) await cluster.waitReady(n)

const liar = await cluster.addNode('liar', { role: 'gateway', labels: {}, bootstrap: ['srv'] })
start(process.execPath, [ROGUE, '--data', liar.dir, '--member', '--record', JSON.stringify({ role: 'server', labels: { site: 'north' } })], { name: 'rogue liar', t })

const memberOn = async (observer: string, peerId: string): Promise<any> =>
  (await cluster.get(observer, '/v1/status')).members.find((m: any) => m.peerId === peerId)

await t.test('peers see the liar as what its certificate says', async t => {
  await waitFor(async () => (await Promise.all(names.map(async n => (await memberOn(n, liar.peerId))?.state === 'alive'))).every(Boolean), 'the liar alive on every agent', 120_000, 500)
  await waitFor(async () => (await Promise.all(names.map(async n => (await cluster.get(n, `/v1/registry/node/${liar.peerId}`).catch(() => null))?.value?.role === 'server'))).every(Boolean),
    'the lying node record on every agent', 60_000, 500)
  for (const n of names) {
    const m = await memberOn(n, liar.peerId)
    t.equal(m.role, 'gateway', `${n}: role from the certificate`)
    t.same(m.labels, {}, `${n}: labels from the certificate`)
  }
  const metrics = await (await fetch(cluster.node('srv').api + '/metrics')).text()
  const mismatch = (field: string): number => Number(metrics.split('\n').find(l => l.startsWith('gatemesh_node_record_mismatch_total') && l.includes(`field="${field}"`))?.split(' ').pop() ?? 0)
  t.ok(mismatch('role') > 0, `the disagreeing role was counted (${mismatch('role')})`)
  t.ok(mismatch('labels') > 0, `the disagreeing labels were counted (${mismatch('labels')})`)
})

await t.test('a role: server deployment is placed on the real server only; site=north matches nobody', async t => {
  await publishAnomalyBundle(cluster, 'srv')
  await deploy(cluster, 'gw', { id: 'servers', model: { name: 'anomaly', version: '1.0.0' }, replicas: 2, placement: { role: 'server' } })
  await deploy(cluster, 'gw', { id: 'north', model: { name: 'anomaly', version: '1.0.0' }, replicas: 1, placement: { labels: { site: 'north' } } })
  const placed = await waitFor(async () => (await cluster.get('gw', '/v1/deployments/servers').catch(() => null))?.placement, 'a placement for the server deployment', 60_000, 500)
  t.same(placed.nodes, [cluster.node('srv').peerId], 'only the server holds a replica, though two were asked for')
  await sleep(3000)
  const again = await cluster.get('srv', '/v1/deployments/servers')
  t.notOk(again.placement.nodes.includes(liar.peerId), 'the liar never got one')
  const north = await cluster.get('srv', '/v1/deployments/north')
  t.same(north.placement?.nodes ?? [], [], 'no node is certified for site=north')
})
