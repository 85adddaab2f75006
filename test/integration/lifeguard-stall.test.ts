import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { agentLog } from '../helpers/trust.ts'

// Lifeguard on real processes: an agent stopped for 5 s (SIGSTOP) comes back
// doubting itself — it must not declare the peers it could not hear dead —
// refutes whatever they concluded about it, and recovers by itself.
const cluster = await Cluster.create()
// stop() sends SIGCONT too, so a stopped agent is ended as well
t.teardown(async () => { await cluster.close() })
const names = ['a', 'b', 'c', 'd']
for (const [i, n] of names.entries()) await cluster.addNode(n, { role: i === 0 ? 'server' : 'gateway' })
for (const n of names) await cluster.start(n, { wait: false })
for (const n of names) await cluster.waitReady(n)
const ids = new Map(names.map(n => [n, cluster.node(n).peerId]))
const allAlive = async (): Promise<boolean> => (await Promise.all(names.map(async n => await cluster.members(n)))).every(v => names.every(x => v.get(ids.get(x)!)?.state === 'alive'))
await waitFor(allAlive, 'all four alive everywhere', 120_000, 500)

await t.test('a stopped agent comes back unhealthy, accuses nobody to death, refutes, and recovers', async t => {
  const d = cluster.node('d')
  const before = (await cluster.get('a', '/v1/status')).members.find((m: any) => m.peerId === d.peerId).incarnation
  const stoppedAt = Date.now()
  d.process!.signal('SIGSTOP')
  await sleep(5000)
  d.process!.signal('SIGCONT')
  // what d's status says first depends on how soon a loaded machine lets it
  // answer (recovery takes two answered probes); its log keeps the doubt itself
  const doubt = await waitFor(async () => (await agentLog(d.dir)).find(l => (l.time ?? 0) >= stoppedAt && typeof l.msg === 'string' && l.msg.startsWith('local health degraded')), 'd to log that it doubts itself', 30_000, 200)
  const late = Number(/stalled for (\d+) ms/.exec(String(doubt.reason))?.[1])
  t.ok(late >= 4000, `d doubted itself because of the stall (${String(doubt.reason)}, score ${doubt.score})`)
  const healthyAgain = Date.now() + 120_000
  const wrongs: string[] = []
  let recovered = false
  while (Date.now() < healthyAgain) {
    const s = await cluster.get('d', '/v1/status').catch(() => null)
    if (s != null) {
      for (const m of s.members) if (m.state === 'dead' && [...ids.values()].includes(m.peerId)) wrongs.push(`${m.peerId} dead on d`)
      if (s.self.localHealth.healthy === true && await allAlive()) {
        recovered = true
        break
      }
    }
    await sleep(250)
  }
  t.same(wrongs, [], 'd never declared a peer dead after its stall')
  t.ok(recovered, 'd is healthy again and everyone sees everyone alive')
  const after = (await cluster.get('a', '/v1/status')).members.find((m: any) => m.peerId === d.peerId).incarnation
  t.ok(after >= before, `d's incarnation ${after === before ? 'held' : `went up (${before} → ${after}): it refuted`}`)
  const log = await readFile(join(d.dir, 'logs', 'agent.log'), 'utf8')
  t.ok(log.includes('this process did not run for a while'), 'd logged its stall')
})
