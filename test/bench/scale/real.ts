import { readFile } from 'node:fs/promises'
import { Cluster, sleep, waitFor } from '../../helpers/cluster.ts'
import { watchEvents } from '../sse.ts'
import { median, round } from '../stats.ts'
import { ownCpuSeconds } from '../idle-meter.ts'
import { rssMb, SocketMeter } from './measure.ts'
import { metric, simulatedPoint, sumMetric, type Point } from './point.ts'
import type { AppCommand } from '../../helpers/app-bundle.ts'

export interface RealCheckInit {
  agents: number
  seconds: number
  command: AppCommand
  log: (msg: string) => void
}

interface Figures { agentCpuPct: number, bytesInPerSec: number, bytesOutPerSec: number, rssMb: number, registryKeys: number, gossipInPerSec: number }

const COMPARED = ['agentCpuPct', 'bytesInPerSec', 'bytesOutPerSec'] as const

/** Who each agent does not hold alive, for a convergence that timed out: `r3: r40 suspect, r41 unknown`. */
export async function unconverged (cluster: Cluster, names: string[]): Promise<string> {
  const ids = names.map(n => [cluster.node(n).peerId, n] as const)
  const lines: string[] = []
  for (const n of names) {
    try {
      const view = await cluster.members(n)
      const missing = ids.filter(([id]) => view.get(id)?.state !== 'alive').map(([id, name]) => `${name} ${view.get(id)?.state ?? 'unknown'}`)
      if (missing.length > 0) lines.push(`${n}: ${missing.join(', ')}`)
    } catch (err) {
      lines.push(`${n}: status failed (${(err as Error).message})`)
    }
  }
  return lines.length === 0 ? 'every view has everyone alive now' : lines.slice(0, 20).join('; ') + (lines.length > 20 ? `; and ${lines.length - 20} more views` : '')
}

/**
 * Every listed agent holds every one of them alive. Asked every 3 s: each
 * ask is a status call on every agent (its member list, each member's
 * health), and 50 of them every 500 ms were load of their own on 2 cores.
 */
export async function waitConverged (cluster: Cluster, names: string[], timeoutMs: number): Promise<void> {
  const ids = names.map(n => cluster.node(n).peerId)
  await waitFor(async () => {
    const views = await Promise.all(names.map(async n => await cluster.members(n)))
    return views.every(v => ids.every(id => v.get(id)?.state === 'alive'))
  }, `all ${names.length} agents alive everywhere`, timeoutMs, 3000).catch(async (err: Error) => {
    throw new Error(`${err.message}; not alive: ${await unconverged(cluster, names)}`)
  })
}

/** How long one agent of a real mesh may take to start. */
const REAL_START_MS = 120_000

/** The machine's busy share (all CPUs) over `ms`, from /proc/stat. */
async function machineBusy (ms: number): Promise<number> {
  const sample = async (): Promise<{ idle: number, total: number }> => {
    const fields = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
    return { idle: fields[3]! + fields[4]!, total: fields.reduce((a, b) => a + b, 0) }
  }
  const a = await sample()
  await sleep(ms)
  const b = await sample()
  return b.total === a.total ? 0 : 1 - (b.idle - a.idle) / (b.total - a.total)
}

/** A join is let in once the machine was below this share busy for 2 s … */
const CALM_BUSY = 0.6
/** … or after this long regardless. */
const CALM_MAX_MS = 60_000

/**
 * Start agents one after another, each once the machine has taken in the
 * one before. A join costs the mesh 6–12 CPU-seconds (every member takes in
 * the newcomer's records, certificate and connections); 50 gateways each
 * have their own CPU for that, but here 50 share 2 cores, and joins every
 * 2–3 s (as soon as each agent was ready) outran them: the load average
 * passed 40, probes ran late, and the mesh of 50 sometimes did not settle
 * within 270 s (it did in two runs of three on the same code). What is
 * measured afterwards, the idle mesh, is the same either way.
 */
export async function startInTurn (cluster: Cluster, names: string[]): Promise<void> {
  for (const n of names) {
    await cluster.start(n, { wait: false })
    await cluster.waitReady(n, REAL_START_MS)
    const since = Date.now()
    while (Date.now() - since < CALM_MAX_MS && await machineBusy(2000) >= CALM_BUSY) { /* wait for the join to be taken in */ }
  }
}

/**
 * The simulator's honesty check: a real mesh of `agents` agent processes,
 * each measured as a simulated point's agent is, then a simulated point of
 * the same size whose members write health as often as the real agents did
 * in the window (on a busy machine load moves, and health is written on
 * change). Agreement: each compared figure of the simulated agent within
 * 50% of the real agents' median.
 */
export async function realCheck (init: RealCheckInit): Promise<Record<string, unknown>> {
  const { agents, seconds, log } = init
  const cluster = await Cluster.create({ command: init.command })
  let real: Figures[] = []
  let perAgent: Figures[]
  let healthPerMemberPerMin = 0
  let leasePerSec = 0
  try {
    const names = Array.from({ length: agents }, (_, i) => `r${i}`)
    for (const [i, name] of names.entries()) {
      await cluster.addNode(name, { role: i === 0 ? 'server' : 'gateway', bootstrap: i === 0 ? [] : ['r0'], config: { logs: { stdout: false, level: 'info' } } })
    }
    log(`real check: starting ${agents} agents`)
    await cluster.start('r0')
    await startInTurn(cluster, names.slice(1))
    await waitConverged(cluster, names, 120_000 + agents * 3000)
    log('real check: converged; settling 15 s')
    await sleep(15_000)

    const pids = names.map(n => cluster.node(n).child!.pid!)
    const meter = new SocketMeter(pids, names.map(n => cluster.node(n).apiPort))
    await meter.reset()
    meter.start()
    // the others' health writes and the scheduler's lease renewals as one follower (r1) sees them:
    // every member's writes reach every member. The watch reports each key that changed, one event per
    // entry installed, however it came (alone, inside the scheduler's renewal delta that relays it, or by
    // anti-entropy): these are writes, not deltas
    let healthWrites = 0
    let leaseWrites = 0
    const watcher = cluster.node('r1')
    const abort = new AbortController()
    void watchEvents(`${watcher.api}/v1/watch?prefix=health/`, ev => { if (ev.key !== `health/${watcher.peerId}`) healthWrites++ }, abort.signal)
    void watchEvents(`${watcher.api}/v1/watch?prefix=scheduler/`, ev => { if (typeof ev.key === 'string' && ev.key.endsWith(`/${cluster.node('r0').peerId}`)) leaseWrites++ }, abort.signal)
    const before = await Promise.all(names.map(async n => await (await fetch(`${cluster.node(n).api}/metrics`)).text()))
    const cpu0 = await Promise.all(pids.map(ownCpuSeconds))
    const w0 = performance.now()
    await sleep(seconds * 1000)
    const cpu1 = await Promise.all(pids.map(ownCpuSeconds))
    const elapsed = (performance.now() - w0) / 1000
    abort.abort()
    await meter.stop()
    await meter.sample()
    const after = await Promise.all(names.map(async n => await (await fetch(`${cluster.node(n).api}/metrics`)).text()))
    const bytes = meter.totals()
    real = await Promise.all(pids.map(async (pid, i) => ({
      agentCpuPct: round(100 * (cpu1[i]! - cpu0[i]!) / elapsed, 2),
      bytesInPerSec: Math.round(bytes.get(pid)!.received / elapsed),
      bytesOutPerSec: Math.round(bytes.get(pid)!.sent / elapsed),
      rssMb: round(await rssMb(pid)),
      registryKeys: metric(after[i]!, 'gatemesh_registry_keys'),
      gossipInPerSec: round((sumMetric(after[i]!, 'gatemesh_gossip_messages_in_total') - sumMetric(before[i]!, 'gatemesh_gossip_messages_in_total')) / elapsed, 2)
    })))
    healthPerMemberPerMin = healthWrites / (agents - 1) / (elapsed / 60)
    leasePerSec = leaseWrites / elapsed
    log(`real check: ${JSON.stringify(real)}; health writes ${round(healthPerMemberPerMin, 2)}/member/min, lease renewals ${round(leasePerSec, 2)}/s`)
  } finally {
    await cluster.close()
  }
  perAgent = real
  const realMedian = Object.fromEntries((['agentCpuPct', 'bytesInPerSec', 'bytesOutPerSec', 'rssMb', 'registryKeys', 'gossipInPerSec'] as const)
    .map(k => [k, round(median(perAgent.map(f => f[k])), 2)])) as unknown as Figures
  // the periodic write is in the schedule already (1 a minute at membership.health.maxIntervalMs' 60 s default)
  const extraHealthPerMin = Math.max(0, healthPerMemberPerMin - 1)
  log(`real check: simulated point of ${agents} with ${round(extraHealthPerMin, 2)} extra health writes/member/min`)
  // the election renews on its 250 ms check once renewIntervalMs (1 s) passed: on a busy machine that is less often
  const leaseRenewMs = leasePerSec > 0 ? Math.round(1000 / leasePerSec) : undefined
  const simulated: Point = await simulatedPoint({ peers: agents, seconds, command: init.command, extraHealthPerMin, ...(leaseRenewMs == null ? {} : { leaseRenewMs }), log })
  const ratio = Object.fromEntries(COMPARED.map(k => [k, round(simulated[k] / realMedian[k], 2)]))
  return {
    agents,
    real: { median: realMedian, perAgent },
    healthWritesPerMemberPerMin: round(healthPerMemberPerMin, 2),
    leaseRenewalsPerSec: round(leasePerSec, 2),
    simulated: Object.fromEntries(Object.entries(simulated).filter(([k]) => k !== 'generators' && k !== 'expected')),
    simulatedOverReal: ratio,
    agreeWithin50Pct: COMPARED.every(k => Math.abs(simulated[k] / realMedian[k] - 1) <= 0.5)
  }
}
