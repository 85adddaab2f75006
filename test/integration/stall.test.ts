import t from 'tap'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import type { ClusterNode } from '../helpers/cluster.ts'
import { rank } from '../../node/scheduler/leader.ts'

// Issue 10's must-show: five agents; SIGSTOP a follower for 5 s, then the
// scheduler for 5 s. A follower's stall must not move the role; the
// scheduler's stall hands it over once, and the old scheduler does not take
// it back. Meanwhile a sampler reads every responsive agent's /v1/scheduler
// every 100 ms and must never see two agents each saying it is the scheduler.

const cluster = await Cluster.create()
const stopped = new Set<ClusterNode>()
t.teardown(async () => {
  // whatever happened, nothing stays stopped
  for (const n of stopped) n.process?.signal('SIGCONT')
  await cluster.close()
})
const names = ['n1', 'n2', 'n3', 'n4', 'n5']
for (const [i, name] of names.entries()) await cluster.addNode(name, { role: i === 0 ? 'server' : 'gateway' })
await Promise.all(names.map(async n => await cluster.start(n)))
await waitFor(async () => (await Promise.all(names.map(async n => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length))).every(c => c === 5), 'five agents alive on all', 90_000, 500)

interface View { leader: string | null, term: number | null, self: boolean }
const byPeer = new Map(names.map(n => [cluster.node(n).peerId, n]))
const agreed = async (): Promise<View> => await waitFor(async () => {
  const views = await Promise.all(names.map(async n => await cluster.get<View>(n, '/v1/scheduler')))
  return views.every(v => v.leader != null && v.leader === views[0]!.leader && v.term === views[0]!.term) && views.filter(v => v.self).length === 1 ? views[0] : null
}, 'every agent to agree on one scheduler', 60_000, 250)

// the sampler: every 100 ms, every agent that answers within 500 ms
const rounds: Array<{ at: number, views: Map<string, View> }> = []
let sampling = true
const sampler = (async () => {
  while (sampling) {
    const at = Date.now()
    const views = new Map<string, View>()
    await Promise.all(names.map(async n => {
      try {
        const res = await fetch(`${cluster.node(n).api}/v1/scheduler`, { signal: AbortSignal.timeout(500) })
        if (res.ok) views.set(n, await res.json() as View)
      } catch {}
    }))
    rounds.push({ at, views })
    await sleep(Math.max(0, 100 - (Date.now() - at)))
  }
})()
const doubles = (): typeof rounds => rounds.filter(r => [...r.views.values()].filter(v => v.self).length > 1)
/** The schedulers `name` reported, in order, with repeats collapsed. */
const sequence = (name: string): string[] => {
  const out: string[] = []
  for (const r of rounds) {
    const l = r.views.get(name)?.leader
    if (l != null && out.at(-1) !== l) out.push(l)
  }
  return out.map(p => byPeer.get(p) ?? p)
}
const stall = async (node: ClusterNode, ms: number): Promise<void> => {
  stopped.add(node)
  node.process!.signal('SIGSTOP')
  await sleep(ms)
  node.process!.signal('SIGCONT')
  stopped.delete(node)
}

const rankOf = (n: string): string => rank({ role: n === 'n1' ? 'server' : 'gateway', peerId: cluster.node(n).peerId })
const first = await agreed()
const leaderName = byPeer.get(first.leader!)!
t.pass(`scheduler ${leaderName}, term ${first.term}`)

await t.test('a follower stopped for 5 s does not move the scheduler', async t => {
  const from = rounds.length
  // the hardest follower: the one that would succeed the scheduler (servers
  // first, then the lowest peer id), so the next subtest needs it healthy again
  const follower = names.filter(n => n !== leaderName)
    .sort((a, b) => rankOf(a).localeCompare(rankOf(b)))[0]!
  await stall(cluster.node(follower), 5000)
  await sleep(10_000)
  const now = await agreed()
  t.equal(byPeer.get(now.leader!), leaderName, `the scheduler is still ${leaderName}`)
  t.equal(now.term, first.term, 'with the same term')
  const since = rounds.slice(from)
  t.ok(since.every(r => [...r.views.values()].every(v => v.leader == null || v.leader === first.leader)), 'no agent reported another scheduler meanwhile')
  t.ok(since.some(r => !r.views.has(follower)) && since.some(r => r.views.has(follower)), `${follower} was unresponsive while stopped and answered again`)
})

await t.test('the scheduler stopped for 5 s hands over once and does not take the role back', async t => {
  const from = rounds.length
  await stall(cluster.node(leaderName), 5000)
  await sleep(10_000)
  const now = await agreed()
  const successor = byPeer.get(now.leader!)!
  t.not(successor, leaderName, `${successor} took over`)
  t.ok(now.term! > first.term!, `with a higher term (${first.term} → ${now.term})`)
  await sleep(5000)
  const later = await agreed()
  t.equal(later.leader, now.leader, 'and keeps it')
  for (const n of names) t.same(sequence(n), [leaderName, successor], `${n} saw ${sequence(n).join(' → ')}: one hand-over`)
  t.ok(rounds.slice(from).every(r => [...r.views.values()].filter(v => v.self).every(v => v.leader === now.leader || v.leader === first.leader)), 'no third scheduler ever')
})

// in a subtest: with a root teardown, tap ends the root test once it has been idle after an assertion
await t.test('the sampler never saw two schedulers', async t => {
  sampling = false
  await sampler
  t.ok(rounds.length >= 100, `${rounds.length} sampling rounds, 100 ms apart when the machine allows`)
  t.same(doubles().map(r => [...r.views].filter(([, v]) => v.self).map(([n]) => n)), [], 'never two agents each saying it is the scheduler')
})
