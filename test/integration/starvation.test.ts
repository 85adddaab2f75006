import t from 'tap'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { starve } from '../helpers/starve.ts'

// Issue 10, the false-positive test: one agent starved of CPU for two
// minutes; no healthy agent is ever marked dead, in anyone's view (the
// starved agent's included, whenever it manages to answer).
const SAMPLE_MS = 1000
const DURATION_MS = 120_000

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const names = ['n1', 'n2', 'n3', 'n4', 'slow']
for (const [i, n] of names.entries()) await cluster.addNode(n, { role: i === 0 ? 'server' : 'gateway' })
for (const n of names) await cluster.start(n, { wait: false })
for (const n of names) await cluster.waitReady(n)
const ids = new Map(names.map(n => [n, cluster.node(n).peerId]))
const healthy = names.filter(n => n !== 'slow')

await waitFor(async () => (await Promise.all(names.map(async n => await cluster.members(n)))).every(v => names.every(x => v.get(ids.get(x)!)?.state === 'alive')),
  'all five alive everywhere', 120_000, 500)

await t.test('a CPU-starved agent makes no healthy agent dead', async t => {
  // an idle agent needs a few % of a core; 3 % leaves it behind on everything
  const starved = await starve(cluster.node('slow').process!.pid!, 3)
  t.teardown(async () => { await starved.undo() })
  t.comment(`starving "slow" with ${starved.method}`)
  const violations: string[] = []
  let samples = 0
  let slowAnswered = 0
  let slowUnhealthy = 0
  const slowSeen = new Map<string, number>()
  const started = Date.now()
  while (Date.now() - started < DURATION_MS) {
    const round = Date.now()
    await Promise.all(names.map(async observer => {
      const status = await fetch(`${cluster.node(observer).api}/v1/status`, { signal: AbortSignal.timeout(observer === 'slow' ? 10_000 : 5000) })
        .then(async r => await r.json() as any).catch(() => null)
      if (status == null) {
        if (healthy.includes(observer)) violations.push(`${observer} did not answer at +${Math.round((round - started) / 1000)} s`)
        return
      }
      if (observer === 'slow') {
        slowAnswered++
        if (status.self.localHealth?.healthy === false) slowUnhealthy++
      }
      for (const m of status.members) {
        const subject = names.find(n => ids.get(n) === m.peerId)
        if (subject == null) continue
        if (subject === 'slow' && observer !== 'slow') slowSeen.set(m.state, (slowSeen.get(m.state) ?? 0) + 1)
        if (healthy.includes(subject) && m.state === 'dead') violations.push(`${observer} saw ${subject} dead at +${Math.round((round - started) / 1000)} s`)
      }
    }))
    samples++
    await sleep(Math.max(0, SAMPLE_MS - (Date.now() - round)))
  }
  t.comment(`the starved agent was ${await starved.throttled()}`)
  t.comment(`${samples} rounds; the starved agent answered ${slowAnswered} of them (unhealthy by its own Lifeguard score in ${slowUnhealthy}); peers saw it ${JSON.stringify(Object.fromEntries(slowSeen))}`)
  t.ok(samples >= DURATION_MS / SAMPLE_MS / 3, `sampled ${samples} rounds over two minutes`)
  t.same(violations, [], 'no healthy agent was ever marked dead, by anyone')
})

await t.test('released, the starved agent is alive everywhere again', async t => {
  await waitFor(async () => (await Promise.all(names.map(async n => await cluster.members(n)))).every(v => names.every(x => v.get(ids.get(x)!)?.state === 'alive')),
    'all five alive everywhere', 120_000, 500)
  t.pass('all alive')
})
