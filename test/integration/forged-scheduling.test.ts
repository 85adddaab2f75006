import { readFile } from 'node:fs/promises'
import t from 'tap'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { deploy, publishAnomalyBundle, runningOn, scheduler } from '../helpers/scheduling.ts'
import { startRogue } from '../helpers/trust.ts'

// Issue 14, first row: forged placements and forged terms, written through a
// node's own API (with its token, as a local process that has it) and
// gossiped by a peer holding a valid certificate. The scheduler must ignore
// them, keep answering its API and keep its memory flat; what was forged
// under an honest node's name is cleaned up by that node.

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
await cluster.addNode('s1', { role: 'server' })
for (const g of ['g1', 'g2']) await cluster.addNode(g)
const names = ['s1', 'g1', 'g2']
await Promise.all(names.map(async n => await cluster.start(n)))
await waitFor(async () => (await Promise.all(names.map(async n => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length))).every(c => c === 3), 'three agents alive on all', 90_000, 500)
const leader = await waitFor(async () => {
  const views = await Promise.all(names.map(async n => await scheduler(cluster, n)))
  return views.every(v => v.leader != null && v.leader === views[0]!.leader) ? views[0] : null
}, 'one scheduler', 60_000, 250)
// no assertion before the bundle is built: building it ends tap's root test early otherwise
await publishAnomalyBundle(cluster, 's1')
await deploy(cluster, 'g2', { id: 'fz', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway' } })
const where = await waitFor(async () => { const r = await runningOn(cluster, 'g2', 'fz'); return r.length === 1 ? r : null }, 'fz to run', 90_000, 500)
t.equal(leader.name, 's1', 'the server schedules')

const s1 = cluster.node('s1')
const g1 = cluster.node('g1')
const rssMb = async (): Promise<number> => Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${s1.process!.pid!}/status`, 'utf8'))?.[1] ?? NaN) / 1024
const placementsWritten = async (): Promise<number> => {
  const text = await (await fetch(`${s1.api}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
  return Number(/gatemesh_placements_written_total(?:\{[^}]*\})? (\d+)/.exec(text)?.[1] ?? 0)
}
const forgedPlacement = (node: string): Record<string, unknown> => ({ term: 1000, nodes: [node], replicas: 1, bundle: 'f'.repeat(64), deploymentTs: [1, 0], at: Date.now() })
const forgedClaim = { term: 2 ** 53 - 1, leaseMs: 60_000, since: 0 }

/** Sample the scheduler's /healthz every 100 ms and its RSS every second while `attack` runs. */
async function underAttack (attack: () => Promise<void>): Promise<{ healthMs: number[], failures: number, rss: number[] }> {
  const healthMs: number[] = []
  const rss: number[] = []
  let failures = 0
  let sampling = true
  const sampler = (async () => {
    let tick = 0
    while (sampling) {
      const started = performance.now()
      try {
        const res = await fetch(`${s1.api}/healthz`, { signal: AbortSignal.timeout(3000) })
        await res.arrayBuffer()
        if (res.ok) healthMs.push(performance.now() - started)
        else failures++
      } catch {
        failures++
      }
      if (tick++ % 10 === 0) rss.push(await rssMb())
      await sleep(100)
    }
  })()
  try {
    await attack()
  } finally {
    sampling = false
    await sampler
  }
  return { healthMs, failures, rss }
}

const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))] ?? NaN

await t.test('through a node\'s own API: a placement with term 1000 on a non-scheduler, a claim with term 2^53-1', async t => {
  const before = await placementsWritten()
  const rss0 = await rssMb()
  let writes = 0
  const sample = await underAttack(async () => {
    const until = Date.now() + 15_000
    while (Date.now() < until) {
      const a = await cluster.request('g1', 'PUT', `/v1/registry/placement/fz/${g1.peerId}`, { value: forgedPlacement(g1.peerId) })
      const b = await cluster.request('g1', 'PUT', `/v1/registry/scheduler/default/${g1.peerId}`, { value: forgedClaim })
      if (a.status === 200 && b.status === 200) writes++
      // once a second, the scheduler's own claim too
      if (writes % 20 === 0) await cluster.request('s1', 'PUT', `/v1/registry/scheduler/default/${s1.peerId}`, { value: forgedClaim })
    }
  })
  t.ok(writes > 20, `${writes} forged pairs written through g1's API`)
  t.equal(sample.failures, 0, 'the scheduler answered /healthz every time')
  t.ok(p99(sample.healthMs) < 1500, `/healthz p99 ${Math.round(p99(sample.healthMs))} ms over ${sample.healthMs.length} samples`)
  t.ok(Math.max(...sample.rss) - rss0 < 80, `RSS ${Math.round(rss0)} → max ${Math.round(Math.max(...sample.rss))} MB`)
  t.ok(await placementsWritten() - before <= 2, `the scheduler wrote ${await placementsWritten() - before} placements meanwhile`)
  for (const n of names) {
    const s = await scheduler(cluster, n)
    t.equal(s.leader, s1.peerId, `${n} still follows s1`)
    t.equal(s.term, leader.term, `${n}: the term did not change`)
    t.equal((await cluster.get(n, '/v1/deployments/fz')).placement?.scheduler, s1.peerId, `${n} follows s1's placement`)
  }
  t.same(await runningOn(cluster, 's1', 'fz'), where, 'fz runs where it ran')
  await waitFor(async () => (await cluster.get('g1', `/v1/registry/placement/fz/${g1.peerId}`)).deleted === true, 'g1 to retire the placement forged under its name', 120_000, 500)
  await waitFor(async () => (await cluster.get('g1', `/v1/registry/scheduler/default/${g1.peerId}`).catch(() => null))?.value?.follows === s1.peerId, 'g1 to endorse s1 again', 30_000, 500)
  t.pass('the poisoned keys healed by themselves')
})

await t.test('gossiped by a peer with a valid certificate', async t => {
  const rogue = await cluster.addNode('rogue')
  const before = await placementsWritten()
  const rss0 = await rssMb()
  const child = startRogue(t, rogue.dir, ['--every', '20',
    '--own', `placement/fz/$self=${JSON.stringify(forgedPlacement(rogue.peerId))}`,
    '--own', `scheduler/default/$self=${JSON.stringify(forgedClaim)}`
  ])
  const sample = await underAttack(async () => {
    await waitFor(async () => (await cluster.get('s1', `/v1/registry/placement/fz/${rogue.peerId}`).catch(() => null)) != null, 'the rogue\'s entries to reach s1', 120_000, 250)
    await sleep(15_000)
  })
  const seen = await cluster.get('s1', `/v1/registry/scheduler/default/${rogue.peerId}`)
  t.equal(seen.value.term, 2 ** 53 - 1, 'the forged claim is stored like any signed entry of its owner')
  t.equal(sample.failures, 0, 'the scheduler answered /healthz every time')
  t.ok(p99(sample.healthMs) < 1500, `/healthz p99 ${Math.round(p99(sample.healthMs))} ms over ${sample.healthMs.length} samples`)
  t.ok(Math.max(...sample.rss) - rss0 < 80, `RSS ${Math.round(rss0)} → max ${Math.round(Math.max(...sample.rss))} MB`)
  t.ok(await placementsWritten() - before <= 2, `the scheduler wrote ${await placementsWritten() - before} placements meanwhile`)
  for (const n of names) {
    const s = await scheduler(cluster, n)
    t.equal(s.leader, s1.peerId, `${n} still follows s1`)
    t.equal((await cluster.get(n, '/v1/deployments/fz')).placement?.scheduler, s1.peerId, `${n} ignores the rogue's placement`)
  }
  t.same(await runningOn(cluster, 's1', 'fz'), where, 'fz runs where it ran')
  child.kill()
})
