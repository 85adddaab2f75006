import { join } from 'node:path'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { anomalyBundleZip } from '../helpers/anomaly-bundle.ts'
import { CLI, Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { NetLab } from '../helpers/netns.ts'
import { run } from '../helpers/processes.ts'
import { deploy } from '../helpers/scheduling.ts'

// Five agents, each in a network namespace of its own, on a switch this test
// builds; the split moves two of them onto a second bridge.
const available = await NetLab.available()
if (!available.ok) {
  // CI machines without root or iproute2 say so; this machine runs it
  t.comment(`SKIP: network namespaces are not available here (${available.reason ?? 'ip netns add failed'})`)
  t.pass('partition test skipped: no network namespaces')
} else {
  await partitionTest()
}

async function partitionTest (): Promise<void> {
  const lab = await NetLab.create(5)
  const cluster = await Cluster.create()
  t.teardown(async () => {
    await cluster.close()
    await lab.destroy()
  })
  const names = ['n1', 'n2', 'n3', 'n4', 'n5']
  for (const [i, name] of names.entries()) {
    await cluster.addNode(name, {
      role: i === 0 ? 'server' : 'gateway',
      bootstrap: i === 0 ? [] : ['n1'],
      netns: { ns: lab.hosts[i]!, address: lab.address(i) }
    })
  }
  await Promise.all(names.map(async n => await cluster.start(n)))

  const aliveCount = async (n: string): Promise<number> => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length
  const leaderOf = async (n: string): Promise<{ leader: string | null, term: number | null }> => await cluster.get(n, '/v1/scheduler')
  const running = async (n: string, id: string): Promise<string[]> => ((await cluster.get(n, `/v1/deployments/${id}`).catch(() => null))?.instances ?? [])
    .filter((i: any) => i.state === 'running').map((i: any) => i.node)

  await waitFor(async () => (await Promise.all(names.map(aliveCount))).every(c => c === 5), 'five agents alive on all', 60_000, 500)

  // the bundle goes in through the real CLI, run inside n1's namespace
  const fleet = await loadFleet(cluster.fleetDir)
  const built = await anomalyBundleZip(fleet.privateKey, { under: cluster.root })
  await run('ip', ['netns', 'exec', lab.hosts[0]!, process.execPath, CLI, 'bundle', 'publish', built.out, '--api', cluster.node('n1').api, '--token-file', join(cluster.node('n1').dir, 'api.token')], { timeoutMs: 120_000 })
  await deploy(cluster, 'n2', { id: 'part', model: { name: 'anomaly', version: '1.0.0' }, replicas: 2, placement: { policy: 'spread' } })
  await waitFor(async () => (await running('n3', 'part')).length === 2, 'two replicas before the split', 90_000, 500)
  const nameOf = new Map(names.map(n => [cluster.node(n).peerId, n]))
  t.comment(`replicas before the split: ${(await running('n3', 'part')).map(p => nameOf.get(p)).sort().join(',')}`)
  // A side of a split runs only what it holds: agents pull bundles from
  // reachable peers. Spread puts the two replicas on the two lowest peer ids
  // (random), both on n1–n3 three times in ten, and then n4 and n5 have no
  // copy and no provider once cut off. Every node holds the bundle before
  // the split, as sites that must keep running when cut off pre-stage what
  // they run.
  await Promise.all(names.map(async n => { await cluster.request(n, 'POST', `/v1/bundles/${built.digest}/pull`) }))
  await waitFor(async () => (await Promise.all(names.map(async n => (await cluster.get(n, `/v1/bundles/${built.digest}`).catch(() => null))?.state)))
    .every(s => s === 'complete'), 'every node to hold the bundle', 60_000, 500)

  await t.test('a 3/2 split schedules on both sides, and healing converges', async t => {
    const before = await leaderOf('n1')
    await lab.split([3, 4])
    const splitAt = Date.now()
    await waitFor(async () => (await Promise.all(['n1', 'n2', 'n3'].map(aliveCount))).every(c => c === 3) &&
      (await Promise.all(['n4', 'n5'].map(aliveCount))).every(c => c === 2), 'each side to see only itself', 60_000, 500)
    const a = await waitFor(async () => { const l = await Promise.all(['n1', 'n2', 'n3'].map(leaderOf)); return l.every(x => x.leader != null && x.leader === l[0]!.leader) ? l[0] : null }, 'one scheduler on the three', 30_000, 500)
    const b = await waitFor(async () => { const l = await Promise.all(['n4', 'n5'].map(leaderOf)); return l.every(x => x.leader != null && x.leader === l[0]!.leader) ? l[0] : null }, 'one scheduler on the two', 30_000, 500)
    t.not(a.leader, b.leader, 'each side has its own scheduler')
    t.ok((b.term ?? 0) > (before.term ?? 0) || (a.term ?? 0) > (before.term ?? 0), 'a new term was started')
    // each side runs two replicas on its own nodes: an instance entry of a node
    // across the split still says running until that node is marked dead
    const sideA = ['n1', 'n2', 'n3'].map(n => cluster.node(n).peerId)
    const sideB = ['n4', 'n5'].map(n => cluster.node(n).peerId)
    await waitFor(async () => (await running('n1', 'part')).filter(p => sideA.includes(p)).length >= 2 &&
      (await running('n5', 'part')).filter(p => sideB.includes(p)).length >= 2, 'both sides to run the deployment on their own nodes', 60_000, 500)
    t.pass(`split after ${Date.now() - splitAt} ms: side A scheduler term ${a.term}, side B term ${b.term}`)

    await lab.heal()
    const healAt = Date.now()
    await waitFor(async () => (await Promise.all(names.map(aliveCount))).every(c => c === 5), 'all five alive again', 90_000, 500)
    const leaders = await waitFor(async () => { const l = await Promise.all(names.map(leaderOf)); return l.every(x => x.leader != null && x.leader === l[0]!.leader && x.term === l[0]!.term) ? l : null }, 'one scheduler everywhere', 60_000, 500)
    t.equal(leaders[0]!.term, Math.max(a.term ?? 0, b.term ?? 0), 'the higher term won')
    await waitFor(async () => {
      const placements = await Promise.all(names.map(async n => (await cluster.get(n, '/v1/registry?prefix=placement/part/')).count))
      const runs = await Promise.all(names.map(async n => (await running(n, 'part')).sort().join()))
      return placements.every(c => c === 1) && runs.every(r => r === runs[0] && r.split(',').length === 2)
    }, 'one placement and exactly two running replicas, seen the same on all', 90_000, 500)
    t.pass(`converged ${Date.now() - healAt} ms after healing: one scheduler, one placement, two replicas`)
    await sleep(3000)
    const later = await Promise.all(names.map(async n => (await running(n, 'part')).length))
    t.same(later, [2, 2, 2, 2, 2], 'and it stays at two')
  })
}
