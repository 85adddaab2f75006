import { access, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { bundleCommand } from '../helpers/app-bundle.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { deploy, publishAnomalyBundle } from '../helpers/scheduling.ts'

// Issue 14 item 10, membership side: one agent runs five minutes ahead
// (libfaketime, Debian's `faketime`); it says so itself and its peers say
// so about it; when its clock is fixed, both clear without a restart.
const LIBS = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1']
const lib = (await Promise.all(LIBS.map(async l => await access(l).then(() => l, () => null)))).find(l => l != null)

if (lib == null) {
  t.comment('SKIP: libfaketime is not installed (Debian package faketime)')
  t.pass('clock skew test skipped: no libfaketime')
} else {
  await clockSkewTest(lib)
}

async function clockSkewTest (lib: string): Promise<void> {
  const cluster = await Cluster.create()
  const offsetFile = join(cluster.root, 'faketime')
  await writeFile(offsetFile, '+5m\n')
  // the shipped agent (the app bundle), as the others run, under libfaketime
  const app = await bundleCommand()
  const skewed = await Cluster.create({
    command: {
      ...app,
      // only the wall clock moves: timers and the monotonic clock stay true
      env: { ...app.env, LD_PRELOAD: lib, FAKETIME_TIMESTAMP_FILE: offsetFile, FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_CACHE_DURATION: '1' }
    }
  })
  t.teardown(async () => {
    await skewed.close()
    await cluster.close()
  })
  await cluster.addNode('a', { role: 'server' })
  await cluster.addNode('b')
  await cluster.addNode('c')
  const d = await skewed.addNode('d', { fleetDir: cluster.fleetDir, bootstrap: [cluster.node('a').multiaddr] })
  const peers = ['a', 'b', 'c']
  for (const n of peers) await cluster.start(n, { wait: false })
  await skewed.start('d', { wait: false })
  for (const n of peers) await cluster.waitReady(n)
  await skewed.waitReady('d')

  const status = async (name: string): Promise<any> => name === 'd' ? await skewed.get('d', '/v1/status') : await cluster.get(name, '/v1/status')
  const memberD = async (observer: string): Promise<any> => (await status(observer)).members.find((m: any) => m.peerId === d.peerId)

  await t.test('the skewed node is reported by itself and by its peers', async t => {
    await waitFor(async () => (await Promise.all(peers.map(async p => (await memberD(p))?.state === 'alive'))).every(Boolean), 'd alive on a, b and c', 120_000, 500)
    const self = await waitFor(async () => { const s = (await status('d')).self; return s.clock?.skewed === true ? s : null }, 'd to call itself skewed', 90_000, 500)
    t.ok(self.clock.offsetMs > 240_000 && self.clock.offsetMs < 360_000, `d: my clock is ${Math.round(self.clock.offsetMs / 1000)} s ahead of my peers`)
    t.ok(self.clock.disagreeing >= 2, `d: ${self.clock.disagreeing} of ${self.clock.peers} peers disagree`)
    for (const p of peers) {
      const m = await waitFor(async () => { const x = await memberD(p); return x?.clockSkewed === true ? x : null }, `${p} to flag d's clock`, 90_000, 500)
      t.ok(m.clockOffsetMs > 240_000 && m.clockOffsetMs < 360_000, `${p}: d is ${Math.round(m.clockOffsetMs / 1000)} s ahead`)
      t.equal((await status(p)).self.clock.skewed, false, `${p} does not think itself skewed`)
    }
    const metrics = await (await fetch(`${d.api}/metrics`, { signal: AbortSignal.timeout(10_000) })).text()
    t.match(metrics, /^gatemesh_clock_skewed(\{[^}]*\})? 1$/m, 'd exports gatemesh_clock_skewed 1')
    const log = await readFile(join(d.dir, 'logs', 'agent.log'), 'utf8')
    t.ok(log.split('\n').some(l => l.includes('"level":"warn"') && l.includes('CLOCK DISAGREES')), 'd said so at warn level')
  })

  const placedOn = async (): Promise<string[]> => (await cluster.get('a', '/v1/deployments/everywhere').catch(() => null))?.placement?.nodes ?? []

  await t.test('the skewed node is not placed on', async t => {
    await publishAnomalyBundle(cluster, 'a')
    // four replicas, four nodes: only the skewed one is left out
    await deploy(cluster, 'a', { id: 'everywhere', model: { name: 'anomaly', version: '1.0.0' }, replicas: 4 })
    const nodes = await waitFor(async () => { const n = await placedOn(); return n.length >= 3 ? n : null }, 'three replicas placed', 120_000, 500)
    t.same([...nodes].sort(), peers.map(p => cluster.node(p).peerId).sort(), 'a, b and c hold the replicas')
    await sleep(3000)
    t.notOk((await placedOn()).includes(d.peerId), 'd holds none, though four were asked for')
  })

  await t.test('fixing the clock clears it everywhere without a restart', async t => {
    const pid = skewed.node('d').child?.pid
    await writeFile(offsetFile, '+0\n')
    await waitFor(async () => (await status('d')).self.clock.skewed === false, 'd to agree with its peers again', 90_000, 500)
    for (const p of peers) await waitFor(async () => (await memberD(p))?.clockSkewed === false, `${p} to clear d's flag`, 120_000, 500)
    t.equal(skewed.node('d').child?.pid, pid, 'the same process: no restart')
    await waitFor(async () => (await placedOn()).includes(d.peerId), 'the fourth replica placed on d', 120_000, 500)
    t.pass('cleared on d and on its peers, and d is placed on again')
  })
}
