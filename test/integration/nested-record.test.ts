import { join } from 'node:path'
import t, { type Test } from 'tap'
import { loadPeerKey } from '../../node/identity/peer-key.ts'
import { signEntry } from '../../node/registry/entry.ts'
import { LevelRegistryStore } from '../../node/registry/store.ts'
import { openDatabase } from '../../node/store/db.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { agentLog, rogueReport, startRogue, startAll } from '../helpers/trust.ts'

// Row 3 of issue 14: a gateway's node record with a deeply nested sensors[].geo.
// A coordinator and an agent as real processes, and a rogue with a valid certificate.
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir, startTimeoutMs: 180_000 })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
await cluster.addNode('a', { role: 'server' })
await startAll(cluster, ['a'])
coordinator.init.bootstrap = [cluster.node('a').multiaddr]
await coordinator.start()
const password = await waitFor(() => coordinator.printedPassword(), 'the first admin\'s password on stdout', 30_000)
// the rogue joins through the coordinator, so it is the coordinator's agent that receives the record first
const rogue = await cluster.addNode('rogue', { bootstrap: [coordinator.multiaddr] })
const DEPTH = 20_000

async function coordinatorUp (t: Test, token: string): Promise<any[]> {
  t.equal(coordinator.child?.exitCode, null, 'the coordinator process is running')
  const res = await coordinator.request('GET', '/api/v1/nodes', { token })
  t.equal(res.status, 200, '/api/v1/nodes answers')
  return res.body.nodes
}

t.test('the record is refused at the registry\'s door and the coordinator stays up', async t => {
  startRogue(t, rogue.dir, ['--nested', String(DEPTH)])
  await rogueReport(rogue.dir)
  const token = await coordinator.login('admin', password)
  const refused = async (): Promise<number> => {
    const text = (await coordinator.request('GET', '/metrics', { token })).text
    return text.split('\n').filter(l => l.startsWith('gatemesh_registry_refused_entries_total{') && l.includes(`writer="${rogue.peerId}"`) && l.includes('reason="ERR_INVALID_VALUE"'))
      .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
  }
  await waitFor(async () => await refused() > 0, 'the coordinator\'s agent to refuse the nested record', 60_000)
  t.pass('the coordinator\'s agent refused the record and counted it against its writer')
  // refused, so never forwarded: the agent behind the coordinator never holds it
  t.equal(await cluster.get('a', `/v1/registry/node/${rogue.peerId}`).catch((err: any) => err.status), 404, 'the agent holds no record of the rogue')
  // several more rounds of the attack, by gossip and anti-entropy
  await sleep(5000)
  const nodes = await coordinatorUp(t, token)
  const shown = nodes.find((n: any) => n.peerId === rogue.peerId)
  t.ok(shown == null || shown.sensors.every((s: any) => s.geo == null), 'nothing of the nested geo reached the coordinator\'s views')
  t.equal((await coordinator.request('GET', '/healthz')).status, 200)
})

t.test('the coordinator restarts past it', async t => {
  await coordinator.stop()
  await coordinator.start()
  const token = await coordinator.login('admin', password)
  await coordinatorUp(t, token)
  t.pass('restarted')
})

t.test('a nested record already on the coordinator\'s disk is dropped at start', async t => {
  await coordinator.stop()
  const { privateKey } = await loadPeerKey(rogue.dir)
  const geo = '['.repeat(DEPTH) + ']'.repeat(DEPTH)
  const record = `{"role":"gateway","labels":{},"addresses":[],"sensors":[{"id":"s1","type":"temperature","geo":${geo}}],"backend":null,"version":"x","cert":"x","startedAt":1}`
  const entry = await signEntry(privateKey, { k: `node/${rogue.peerId}`, v: record, t: [Date.now() + 1000, 0], w: rogue.peerId })
  const nodeDir = join(coordinator.init.dataDir, 'node')
  const db = await openDatabase(nodeDir)
  await new LevelRegistryStore(db).put([entry])
  await db.close()
  await coordinator.start()
  const token = await coordinator.login('admin', password)
  await coordinatorUp(t, token)
  const healed = (await agentLog(nodeDir)).filter(l => l.msg?.startsWith('registry healed at load'))
  t.ok(healed.some(l => l.reasons?.invalid >= 1), 'the start dropped the nested record from disk and said so')
  await waitFor(async () => (await coordinator.request('GET', '/api/v1/nodes', { token })).body.nodes.some((n: any) => n.peerId === cluster.node('a').peerId && n.state === 'alive'), 'the coordinator to see the agent again', 60_000)
  t.pass('and shows the fleet')
})
