import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { deploymentKey } from '../../node/scheduler/keys.ts'
import { authorizeRegistryWrite } from '../../packaging/trust.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { gatemesh as cli, startAll } from '../helpers/trust.ts'
import { fleetAuth } from '../helpers/scheduling.ts'


// Row 6 of issue 14: replay through any agent's local API of a saved {value, auth}.
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const names = ['a', 'b', 'c']
await cluster.addNode('a', { role: 'server' })
await cluster.addNode('b')
await cluster.addNode('c')
await startAll(cluster, names)
await waitFor(async () => (await Promise.all(names.map(async n => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length === 3))).every(Boolean), 'three agents alive', 60_000)
const fleet = await loadFleet(cluster.fleetDir)
const fleetKeyFile = join(cluster.fleetDir, 'fleet.key')
const spec = { id: 'd1', model: { name: 'anomaly', version: '1.0.0' }, replicas: 1 }
const key = deploymentKey('d1')

const everywhere = async (check: (entry: any) => boolean, what: string): Promise<void> => {
  await waitFor(async () => (await Promise.all(names.map(async n => check(await cluster.get(n, `/v1/registry/${key}`).catch(() => null))))).every(Boolean), what, 30_000)
}
const gatemesh = async (...args: string[]): Promise<string> => await cli(cluster, args)

t.test('a saved {value, auth} replayed through any agent cannot undo a later write', async t => {
  // deploy and undeploy with the CLI, as an operator would
  const specFile = join(cluster.root, 'd1.json')
  await writeFile(specFile, JSON.stringify(spec))
  await gatemesh('deploy', specFile, '--key', fleetKeyFile, '--data', cluster.node('a').dir)
  await everywhere(e => e?.value?.id === 'd1', 'the deployment on every agent')
  const created = await cluster.get('a', `/v1/registry/${key}`)
  t.equal(created.writer, cluster.node('a').peerId, 'written by the agent the CLI handed it to')
  // what an attacker keeps: the entry as any agent shows it
  const saved = { value: created.value, auth: created.auth as string }

  await gatemesh('undeploy', 'd1', '--key', fleetKeyFile, '--data', cluster.node('b').dir)
  await everywhere(e => e?.deleted === true, 'the tombstone on every agent')
  const tomb = await cluster.get('b', `/v1/registry/${key}`)
  const savedTomb = { auth: tomb.auth as string }

  for (const n of names) {
    const viaRegistry = await cluster.request(n, 'PUT', `/v1/registry/${key}`, saved)
    const viaDeployments = await cluster.request(n, 'PUT', '/v1/deployments/d1', { spec: saved.value, auth: saved.auth })
    const expected = n === 'a' ? 409 : 403
    t.equal(viaRegistry.status, expected, `replayed create through ${n}'s registry route: ${viaRegistry.status} ${(viaRegistry.body as any).message}`)
    t.equal(viaDeployments.status, expected, `replayed create through ${n}'s deployments route: ${viaDeployments.status}`)
  }
  await sleep(2000)
  await everywhere(e => e?.deleted === true, 'the deployment still deleted')
  t.pass('deleted stays deleted on every agent')

  // a new deployment with the same id; the old tombstone's authorisation must not delete it
  await gatemesh('deploy', specFile, '--key', fleetKeyFile, '--data', cluster.node('c').dir)
  await everywhere(e => e?.value?.id === 'd1', 'the new deployment on every agent')
  for (const n of names) {
    const replay = await cluster.request(n, 'DELETE', `/v1/registry/${key}`, savedTomb)
    t.equal(replay.status, n === 'b' ? 409 : 403, `replayed tombstone through ${n}: ${replay.status} ${(replay.body as any).message}`)
  }
  await sleep(2000)
  await everywhere(e => e?.value?.id === 'd1' && e.deleted === false, 'the new deployment still there')
  t.pass('an old tombstone\'s authorisation deletes nothing new')
})

t.test('an authorisation expires, and binds one writer', async t => {
  const valueJson = JSON.stringify({ ...spec, id: 'd2' })
  // signed long ago: the stamp is fresh but the authorisation's lifetime is over
  const stamp = await cluster.get('a', `/v1/write-stamp?key=${deploymentKey('d2')}`)
  const stale = await authorizeRegistryWrite({ key: deploymentKey('d2'), valueJson, writer: stamp.writer, ts: stamp.ts }, { key: fleet.privateKey }, { now: Math.floor(Date.now() / 1000) - 3600 })
  const expired = await cluster.request('a', 'PUT', `/v1/registry/${deploymentKey('d2')}`, { value: JSON.parse(valueJson), auth: stale })
  t.equal(expired.status, 403, 'an expired authorisation is refused')
  t.match((expired.body as any).message, /expired/)

  const forA = await fleetAuth(cluster, 'a', deploymentKey('d2'), valueJson, fleet.privateKey)
  const elsewhere = await cluster.request('b', 'PUT', `/v1/registry/${deploymentKey('d2')}`, { value: JSON.parse(valueJson), auth: forA })
  t.equal(elsewhere.status, 403, 'an authorisation for agent a does not work through b')
  t.match((elsewhere.body as any).message, /writer/)
  t.equal((await cluster.request('a', 'PUT', `/v1/registry/${deploymentKey('d2')}`, { value: JSON.parse(valueJson), auth: forA })).status, 200, 'it works through a')
})
