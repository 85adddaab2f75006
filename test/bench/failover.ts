/**
 * `npm run bench -- failover --nodes 10 [--sources]`
 *
 * N agents (the shipped bundle), a two-replica deployment with one replica
 * on the elected scheduler, and a client calling predict through a node
 * that runs no replica. Then kill -9 the scheduler and measure the time to a
 * new scheduler on every survivor, the time until the deployment again runs
 * two replicas on live nodes, and the predict error rate meanwhile.
 */
import { SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { agentCommand } from './agents.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { deploy, publishAnomalyBundle } from '../helpers/scheduling.ts'
import { round } from './stats.ts'
import type { BenchArgs } from './run.ts'

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const nodes = Number(args.nodes ?? 10)
  const log = (msg: string): void => { console.error(`[failover] ${msg}`) }
  const command = await agentCommand(args.sources === true, log)
  const cluster = await Cluster.create({ command })
  try {
    const names = Array.from({ length: nodes }, (_, i) => `n${i}`)
    for (const [i, name] of names.entries()) {
      await cluster.addNode(name, { role: i === 0 ? 'server' : 'gateway', bootstrap: i === 0 ? [] : ['n0'], config: { logs: { stdout: false, level: 'info' } } })
    }
    await cluster.start('n0')
    await Promise.all(names.slice(1).map(async n => await cluster.start(n)))
    const byPeer = new Map(names.map(n => [cluster.node(n).peerId, n]))
    await waitFor(async () => (await Promise.all(names.map(async n => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length))).every(c => c === nodes), 'all agents alive', 120_000, 500)
    const leader = await waitFor(async () => {
      const views = await Promise.all(names.map(async n => await cluster.get(n, '/v1/scheduler')))
      return views.every(v => v.leader != null && v.leader === views[0].leader) ? views[0] : null
    }, 'one scheduler', 60_000, 250)
    const schedulerName = byPeer.get(leader.leader)!
    log(`scheduler ${schedulerName} (term ${leader.term})`)

    await publishAnomalyBundle(cluster, schedulerName)
    await deploy(cluster, schedulerName, { id: 'fo', model: { name: 'anomaly', version: '1.0.0' }, replicas: 2, placement: { policy: 'spread' } })
    const running = async (observer: string): Promise<string[]> => ((await cluster.get(observer, '/v1/deployments/fo')).instances as Array<{ node: string, state: string }>)
      .filter(i => i.state === 'running').map(i => byPeer.get(i.node)!)
    // the scheduler must run one of the replicas: evict from other nodes until it does
    for (let i = 0; i < nodes; i++) {
      const r = await waitFor(async () => { const x = await running(schedulerName); return x.length === 2 ? x : null }, 'two replicas', 60_000, 250)
      if (r.includes(schedulerName)) break
      await cluster.request(r[0]!, 'POST', '/v1/deployments/fo/evict')
      await waitFor(async () => !(await running(schedulerName)).includes(r[0]!), 'eviction', 30_000, 100)
    }
    const replicas = await running(schedulerName)
    if (!replicas.includes(schedulerName)) throw new Error('could not get a replica onto the scheduler')
    const client = names.find(n => n !== schedulerName && !replicas.includes(n))!
    log(`replicas on ${replicas.join(', ')}; client calls through ${client}`)

    const body = JSON.stringify({ instances: [temperatures(21).map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))] })
    let ok = 0
    let failed = 0
    let calling = true
    const caller = async (): Promise<void> => {
      while (calling) {
        try {
          const res = await fetch(`${cluster.node(client).api}/v1/models/anomaly:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(10_000) })
          await res.arrayBuffer()
          if (res.ok) ok++
          else failed++
        } catch {
          failed++
        }
        await sleep(5)
      }
    }
    const callers = Array.from({ length: 4 }, async () => { await caller() })
    await sleep(3000)

    const killedAt = performance.now()
    cluster.kill(schedulerName)
    const survivors = names.filter(n => n !== schedulerName)
    let electionMs = NaN
    let rescheduleMs = NaN
    await waitFor(async () => {
      if (Number.isNaN(electionMs)) {
        const views = await Promise.all(survivors.map(async n => await cluster.get(n, '/v1/scheduler')))
        if (views.every(v => v.leader != null && v.leader !== leader.leader && v.leader === views[0].leader)) electionMs = performance.now() - killedAt
      }
      if (Number.isNaN(rescheduleMs)) {
        const r = await running(client)
        if (r.length === 2 && !r.includes(schedulerName)) rescheduleMs = performance.now() - killedAt
      }
      return !Number.isNaN(electionMs) && !Number.isNaN(rescheduleMs)
    }, 'a new scheduler and the lost replica running elsewhere', 60_000, 25)
    log(`election ${electionMs.toFixed(0)} ms, reschedule ${rescheduleMs.toFixed(0)} ms`)
    await sleep(3000)
    calling = false
    await Promise.all(callers)
    log(`predicts ${ok} ok, ${failed} failed`)
    return {
      scenario: 'failover',
      nodes,
      electionMs: round(electionMs, 0),
      rescheduleMs: round(rescheduleMs, 0),
      predictDuringFailoverErrorRate: round(failed / Math.max(1, ok + failed), 4),
      predicts: ok + failed,
      agent: args.sources === true ? 'sources' : 'bundle'
    }
  } finally {
    await cluster.close()
  }
}
