import { cp, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { loadPeerKey } from '../../node/identity/peer-key.ts'
import { PERSIST_DELAY_MS } from '../../node/registry/replica.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { fleetAuth } from '../helpers/scheduling.ts'
import { budget } from '../helpers/budget.ts'
import { startRogue, whileRogueRuns } from '../helpers/trust.ts'

// five agents as separate processes over real TCP on 127.0.0.1
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })

const names = ['a', 'b', 'c', 'd', 'e']
await cluster.addNode('a', { role: 'server' })
for (const n of names.slice(1)) await cluster.addNode(n)
await Promise.all(names.map(async n => await cluster.start(n)))
const peerIds = names.map(n => cluster.node(n).peerId)

async function allSee (observers: string[], check: (name: string) => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(async () => (await Promise.all(observers.map(check))).every(Boolean), what, timeoutMs)
}

await t.test('five agents join through one bootstrap peer', async t => {
  await allSee(names, async n => {
    const members = await cluster.members(n)
    return peerIds.every(id => members.get(id)?.state === 'alive')
  }, 'every agent to see all five alive')
  const members = await cluster.members('e')
  t.equal(members.size, 5, 'e knows exactly five members')
  t.equal(members.get(cluster.node('a').peerId)?.role, 'server')
})

await t.test('a write on any one agent is visible on all', async t => {
  const c = cluster.node('c')
  const key = `instance/${c.peerId}/probe`
  const put = await cluster.request('c', 'PUT', `/v1/registry/${key}`, { value: { hello: 'mesh' } })
  t.equal(put.status, 200, 'own instance key is writable')
  await allSee(names, async n => (await cluster.get(n, `/v1/registry/${key}`).catch(() => null))?.value?.hello === 'mesh', 'the write on every agent')

  const foreign = await cluster.request('c', 'PUT', `/v1/registry/instance/${cluster.node('a').peerId}/x`, { value: 1 })
  t.equal(foreign.status, 403, 'another node\'s key is refused')
  const unsigned = await cluster.request('c', 'PUT', '/v1/registry/deployment/d1', { value: { replicas: 1 } })
  t.equal(unsigned.status, 403, 'a fleet key without a fleet signature is refused')

  const fleet = await loadFleet(cluster.fleetDir)
  const value = { replicas: 2 }
  const auth = await fleetAuth(cluster, 'b', 'deployment/d1', JSON.stringify(value), fleet.privateKey)
  const signed = await cluster.request('b', 'PUT', '/v1/registry/deployment/d1', { value, auth })
  t.equal(signed.status, 200, 'a fleet-signed write is accepted')
  await allSee(names, async n => (await cluster.get(n, '/v1/registry/deployment/d1').catch(() => null))?.value?.replicas === 2, 'the signed write on every agent')
  const tampered = await cluster.request('b', 'PUT', '/v1/registry/deployment/d1', { value: { replicas: 99 }, auth })
  t.equal(tampered.status, 403, 'a signature for another value is refused')
})

await t.test('kill -9: survivors mark it dead; restart restores and catches up', async t => {
  const d = cluster.node('d')
  // entries still arriving (the deployment above being placed) are in memory before they are on
  // disk (a peer's entries within PERSIST_DELAY_MS), and kill -9 loses what was not written yet:
  // count d's keys once they stopped growing for longer than that
  let before = await cluster.get('d', '/v1/registry')
  await waitFor(async () => {
    await sleep(PERSIST_DELAY_MS + 500)
    const now = await cluster.get('d', '/v1/registry')
    const settled = now.count === before.count
    before = now
    return settled
  }, 'd\'s registry to stop growing', 20_000)
  cluster.kill('d')
  const survivors = names.filter(n => n !== 'd')
  await allSee(survivors, async n => (await cluster.members(n)).get(d.peerId)?.state === 'dead', 'every survivor to mark d dead', 15_000)
  t.pass('all four survivors marked d dead')

  // written while d is down: d must catch up on it
  const a = cluster.node('a')
  await cluster.request('a', 'PUT', `/v1/registry/instance/${a.peerId}/missed`, { value: { while: 'd was down' } })
  await cluster.start('d')
  const status = await cluster.get('d', '/v1/status')
  t.equal(status.self.peerId, d.peerId, 'same peer id after restart')
  const log = await readFile(join(d.dir, 'logs', 'agent.log'), 'utf8')
  const loaded = log.trim().split('\n').map(l => JSON.parse(l)).filter(l => l.msg === 'registry loaded')
  t.equal(loaded.length, 2, 'two starts logged')
  t.ok(loaded[1].keys >= before.count, `restored ${loaded[1].keys} keys from disk (had ${before.count} live)`)
  await waitFor(async () => (await cluster.get('d', `/v1/registry/instance/${a.peerId}/missed`).catch(() => null))?.value?.while === 'd was down', 'd to catch up')
  t.pass('d caught up on the write it missed')
  await allSee(names, async n => (await cluster.members(n)).get(d.peerId)?.state === 'alive', 'd alive again everywhere')
  t.pass('d is alive again on every node')
})

/** Start a rogue peer from `dir` and check that nothing of it lands anywhere. */
async function rogueCannotJoin (t: Test, name: string, dir: string, expectDenied: boolean): Promise<void> {
  const peerId = (await loadPeerKey(dir)).peerId.toString()
  const rogue = startRogue(t, dir, ['--forge', 'deployment/forged'])
  if (expectDenied) {
    await whileRogueRuns(rogue, dir, waitFor(async () => (await cluster.get('a', '/v1/status')).denied.some((d: any) => d.peerId === peerId), `${name} to be denied by a`))
    t.pass(`${name} was denied by the bootstrap peer`)
  }
  // give it time to start, publish and sync (a rogue from sources starts slowly on a busy machine)
  await sleep(budget(4000))
  for (const n of names) {
    const status = await cluster.get(n, '/v1/status')
    t.notOk(status.members.some((m: any) => m.peerId === peerId), `${name} is not a member on ${n}`)
    const reg = await cluster.get(n, '/v1/registry')
    t.notOk(reg.entries.some((e: any) => e.key.includes(peerId) || e.writer === peerId || e.key === 'deployment/forged'), `nothing from ${name} in ${n}'s registry`)
  }
  rogue.kill()
}

await t.test('peers without a valid certificate cannot join', async t => {
  const other = join(cluster.root, 'other-fleet')
  await initFleet(other)
  const networkKey = join(cluster.fleetDir, 'network.key')

  // another fleet's certificate, but our network key so the transport lets it in
  const foreign = await cluster.addNode('foreign', { fleetDir: other })
  await rm(join(foreign.dir, 'network.key'))
  await cp(networkKey, join(foreign.dir, 'network.key'))
  await t.test('another fleet\'s certificate', async t => { await rogueCannotJoin(t, 'foreign', foreign.dir, true) })

  const expired = await cluster.addNode('expired', { validDays: 1 / 86400 })
  await sleep(1500)
  await t.test('an expired certificate', async t => { await rogueCannotJoin(t, 'expired', expired.dir, true) })

  const thief = await cluster.addNode('thief')
  await writeFile(join(thief.dir, 'node.cert'), await readFile(join(cluster.node('b').dir, 'node.cert')))
  await t.test('a certificate for another peer id', async t => { await rogueCannotJoin(t, 'thief', thief.dir, true) })

  const outsider = await cluster.addNode('outsider')
  const otherFleet = await loadFleet(other)
  await rm(join(outsider.dir, 'network.key'))
  await writeFile(join(outsider.dir, 'network.key'), otherFleet.networkKey, { mode: 0o600 })
  await t.test('the wrong network key', async t => { await rogueCannotJoin(t, 'outsider', outsider.dir, false) })
})

await t.test('garbage on every protocol leaves the agent running', async t => {
  const rogue = await cluster.addNode('garbage')
  startRogue(t, rogue.dir, ['--garbage'])
  const report = await waitFor(async () => JSON.parse(await readFile(join(rogue.dir, 'rogue.json'), 'utf8')), 'the rogue to send its garbage', 30_000)
  t.ok(report.sent.length >= 6, `rogue sent ${report.sent.length} malformed messages`)
  await sleep(1000)
  const health = await cluster.get('a', '/healthz')
  t.equal(health.ok, true, 'the agent still answers')
  const metrics = await (await fetch(cluster.node('a').api + '/metrics')).text()
  const rejected = metrics.split('\n').filter(l => l.startsWith('gatemesh_rejected_messages_total'))
  const total = rejected.reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
  t.ok(total > 0, `rejections were counted (${rejected.join('; ')})`)
  const members = await cluster.members('a')
  t.ok(peerIds.every(id => members.get(id)?.state === 'alive'), 'the mesh is intact')
})
