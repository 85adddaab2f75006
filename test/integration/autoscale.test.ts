import t from 'tap'
import { SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { slowness } from '../helpers/budget.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { deploy, publishAnomalyBundle } from '../helpers/scheduling.ts'

// Three gateways. The deployment starts with one replica; a load generator
// hammers it with predicts until its agent's CPU passes the high mark.
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const names = ['a1', 'a2', 'a3']
for (const n of names) await cluster.addNode(n)
await Promise.all(names.map(async n => await cluster.start(n)))
await waitFor(async () => (await Promise.all(names.map(async n => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length))).every(c => c === 3), 'three alive', 60_000)
await publishAnomalyBundle(cluster, 'a1')
// A busy machine gives the loaded agent a fraction of a core: the high mark
// comes down with the measured slowness, staying well above an idle agent's
// 2–6 % (and the low mark) so that only the load crosses it
const cpuHighPct = Math.max(15, Math.round(35 / slowness()))
const cpuLowPct = Math.min(10, cpuHighPct - 7)
t.comment(`machine slowness ${slowness().toFixed(2)}: autoscale above ${cpuHighPct} %, below ${cpuLowPct} %`)
await deploy(cluster, 'a1', {
  id: 'auto',
  model: { name: 'anomaly', version: '1.0.0' },
  autoscale: { cpuHighPct, cpuLowPct, minReplicas: 1, maxReplicas: 2, cooldownSec: 8, sustainSec: 3 }
})

const status = async (): Promise<{ replicas: number, running: string[] }> => {
  const d = await cluster.get('a2', '/v1/deployments/auto')
  return { replicas: d.placement?.replicas ?? 0, running: d.instances.filter((i: any) => i.state === 'running').map((i: any) => i.node) }
}
const history: Array<{ at: number, replicas: number }> = []
const sampler = setInterval(() => {
  // 0 means not placed yet: the history starts at the first placement
  status().then(s => { if (s.replicas > 0 && history.at(-1)?.replicas !== s.replicas) history.push({ at: Date.now(), replicas: s.replicas }) }, () => {})
}, 250)
t.teardown(() => { clearInterval(sampler) })

const first = await waitFor(async () => { const s = await status(); return s.running.length === 1 ? s : null }, 'one replica running', 60_000)
const hot = [...cluster.nodes.values()].find(n => n.peerId === first.running[0])!

await t.test('sustained CPU load adds a replica; removing it takes the replica away after the cooldown', async t => {
  let loading = true
  // a wait that fails must not leave the load running: it would keep this process alive until tap's timeout
  t.teardown(() => { loading = false })
  const body = JSON.stringify({ instances: Array.from({ length: 64 }, () => temperatures(21).map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))) })
  const worker = async (): Promise<void> => {
    while (loading) {
      await fetch(`${hot.api}/v1/models/anomaly:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(10_000) }).then(async r => await r.arrayBuffer()).catch(() => {})
    }
  }
  const workers = Array.from({ length: 12 }, async () => { await worker() })
  const up = await waitFor(async () => { const s = await status(); return s.replicas === 2 && s.running.length === 2 ? s : null }, 'a second replica under load', 90_000, 250)
  t.pass(`scaled to 2 (running on ${up.running.length} nodes)`)
  const health = await cluster.get('a2', '/v1/status')
  const cpu = health.members.find((m: any) => m.peerId === hot.peerId)?.health?.processCpuPct
  t.ok(cpu > cpuLowPct, `the loaded agent reported ${cpu}% CPU`)
  loading = false
  await Promise.all(workers)
  const down = await waitFor(async () => { const s = await status(); return s.replicas === 1 && s.running.length === 1 ? s : null }, 'back to one replica after the load stops', 90_000, 250)
  t.pass(`scaled back to ${down.replicas}`)
  await sleep(12_000)
  t.equal((await status()).replicas, 1, 'it stays at one with no load')
  t.same(history.map(h => h.replicas), [1, 2, 1], `replica count changed only up then down: ${history.map(h => h.replicas).join(' → ')}`)
  for (let i = 2; i < history.length; i++) t.ok(history[i]!.at - history[i - 1]!.at >= 8000 - 500, 'changes at least a cooldown apart')
})
