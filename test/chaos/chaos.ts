/**
 * One chaos run: the lab (lab.ts) under the workload (workload.ts) while the
 * nemesis (nemesis.ts) applies the seed's plan (schedule.ts); then every
 * fault ends, the mesh is given time to converge, and the checker counts.
 */
import { writeFile } from 'node:fs/promises'
import { budget } from '../helpers/budget.ts'
import { sleep } from '../helpers/cluster.ts'
import { notificationFigures, type NotificationFigures } from './checker.ts'
import { ChaosLab } from './lab.ts'
import { Nemesis } from './nemesis.ts'
import { plan, type Fault } from './schedule.ts'
import { Workload } from './workload.ts'

export interface ChaosInit {
  seed: number
  minutes: number
  /** @default 7 */
  agents?: number
  /**
   * An agent not back this long after a fault on it ended counts in
   * agentsNotBackWithin30s; a function is asked once the mesh is up (a
   * test's `() => budget(30_000)`, stretched by the starts it measured). @default 30000
   */
  backWithinMs?: number | (() => number)
  /** where the run's record goes (every predict, delivery, fault and return): a JSON file. @default none */
  detailsFile?: string
  log?: (msg: string) => void
}

export interface ChaosResult {
  seed: number
  minutes: number
  agents: number
  notificationsLost: number
  duplicatesSeen: number
  unsignedOrTamperedStoredOrRun: number
  deploymentsWithMultiplePlacements: number
  extraInstancesAfterHeal: number
  agentsNotBackWithin30s: number
  predictErrorRateDuringFaults: number
  predictErrorRateOutsideFaults: number
  convergeSecondsAfterLastHeal: number | null
  /** the "30 s" used (a test stretches it on a slow machine, as every test wait is: test/helpers/budget.ts) */
  backWithinS: number
  backSecondsMax: number
  predicts: { total: number, duringFaults: number, errorsDuringFaults: number, ok: number }
  notifications: Omit<NotificationFigures, 'lost' | 'duplicates'>
  churn: { ops: number, failed: number }
  notConverged?: string
  faults: Array<Record<string, unknown>>
  details?: string
  replay: string
}

interface Back { agent: string, after: string, seconds: number | null }

export async function runChaos (init: ChaosInit): Promise<ChaosResult> {
  const agents = init.agents ?? 7
  const log = init.log ?? ((msg: string) => { console.error(`[chaos] ${msg}`) })
  const durationMs = Math.round(init.minutes * 60_000)
  const faults = plan({ seed: init.seed, durationMs, agents })
  log(`seed ${init.seed}: ${faults.length} faults over ${init.minutes} min`)
  const lab = await ChaosLab.create(agents, log)
  let nemesis: Nemesis | undefined
  let workload: Workload | undefined
  try {
    await lab.setUp()
    const t0 = Date.now()
    nemesis = new Nemesis(lab, t0)
    const n = nemesis
    workload = new Workload(lab, init.seed, () => n.activeCount > 0)
    const backWithinMs = typeof init.backWithinMs === 'function' ? init.backWithinMs() : init.backWithinMs ?? 30_000
    const backs: Array<Promise<Back>> = []
    n.onEnd = (fault, names) => {
      for (const agent of names) backs.push(watchBack(lab, n, agent, fault.kind))
    }
    workload.start()

    // the plan, in time order: starts and ends
    const events = faults.flatMap(f => [{ at: f.at, f, start: true }, { at: f.until, f, start: false }]).sort((a, b) => a.at - b.at || Number(a.start) - Number(b.start))
    for (const e of events) {
      const wait = t0 + e.at - Date.now()
      if (wait > 0) await sleep(wait)
      if (e.start) {
        log(`+${((Date.now() - t0) / 1000).toFixed(1)}s ${e.f.kind} ${e.f.targets.map(i => lab.agents[i]).join(',')}${e.f.bridge == null ? '' : ` bridge ${lab.agents[e.f.bridge]!}`}`)
        // a slow fault (filling a disk, restarting a broker) does not hold back the next
        void n.begin(e.f).then(() => { if (e.f.until <= e.f.at) void n.end(e.f) })
      } else if (e.f.until > e.f.at) {
        void n.end(e.f)
      }
    }
    await sleep(1000)
    await n.endAll()
    const healedAt = Date.now()
    // what converges is what the faults left: no new deployments or requests meanwhile
    await workload.stop()
    log('every fault ended, the workload stopped: converging')
    const converge = await converged(lab, workload, budget(240_000), log)
    const convergeS = converge.ok ? Math.round((Date.now() - healedAt) / 100) / 10 : null
    log(converge.ok ? `converged ${String(convergeS)} s after the last heal` : `did not converge: ${converge.why}`)
    const backResults = await Promise.all(backs)

    const final = await finalState(lab)
    const figures = notificationFigures(lab.deliveries, workload.predicts, final.senseLeftover)
    const during = workload.predicts.filter(p => p.faulted)
    const outside = workload.predicts.filter(p => !p.faulted)
    const rate = (xs: typeof during): number => xs.length === 0 ? 0 : Math.round(xs.filter(p => !p.ok).length / xs.length * 1000) / 1000
    const { lost, duplicates, ...notifications } = figures
    if (init.detailsFile != null) {
      await writeFile(init.detailsFile, JSON.stringify({ seed: init.seed, t0, healedAt, peers: Object.fromEntries([...lab.cluster.nodes.values()].map(x => [x.peerId, x.name])), plan: faults, applied: n.applied, backs: backResults, predicts: workload.predicts, churn: workload.churn, deliveries: lab.deliveries, final }, null, 1))
    }
    return {
      seed: init.seed,
      minutes: init.minutes,
      agents,
      notificationsLost: lost,
      duplicatesSeen: duplicates,
      unsignedOrTamperedStoredOrRun: final.unsigned + n.applied.filter(a => a.kind === 'tamper').reduce((k, a) => k + Object.values(a.outcome ?? {}).filter(v => typeof v === 'number' ? v < 400 : /^2\d\d$/.test(String(v))).length, 0),
      deploymentsWithMultiplePlacements: final.multiplePlacements,
      extraInstancesAfterHeal: final.extraInstances,
      agentsNotBackWithin30s: backResults.filter(b => b.seconds == null || b.seconds * 1000 > backWithinMs).length,
      predictErrorRateDuringFaults: rate(during),
      predictErrorRateOutsideFaults: rate(outside),
      convergeSecondsAfterLastHeal: convergeS,
      backWithinS: backWithinMs / 1000,
      backSecondsMax: Math.max(0, ...backResults.map(b => b.seconds ?? Infinity)),
      predicts: { total: workload.predicts.length, duringFaults: during.length, errorsDuringFaults: during.filter(p => !p.ok).length, ok: workload.predicts.filter(p => p.ok).length },
      notifications,
      churn: { ops: workload.churn.length, failed: workload.churn.filter(c => !c.ok).length },
      ...(converge.ok ? {} : { notConverged: converge.why }),
      faults: n.applied.map(a => ({ ...a })),
      ...(init.detailsFile == null ? {} : { details: init.detailsFile }),
      replay: `npm run chaos -- --minutes ${init.minutes} --seed ${init.seed}${agents === 7 ? '' : ` --agents ${agents}`}`
    }
  } finally {
    await workload?.stop().catch(() => {})
    await nemesis?.endAll().catch(() => {})
    await lab.close(init.detailsFile == null ? undefined : `${init.detailsFile.replace(/\.json$/, '')}.logs`)
  }
}

/**
 * An agent is back when its API answers and an agent under no fault sees
 * it alive. Watched for up to 120 s; null if it never came back (or a new
 * fault on it came first, then it is not counted).
 */
async function watchBack (lab: ChaosLab, nemesis: Nemesis, agent: string, after: Fault['kind']): Promise<Back> {
  const started = Date.now()
  const peerId = lab.cluster.node(agent).peerId
  while (Date.now() - started < 120_000) {
    if (nemesis.faulted().has(agent)) return { agent, after, seconds: 0 }
    try {
      await lab.cluster.get(agent, '/healthz')
      const observers = lab.agents.filter(a => a !== agent && !nemesis.faulted().has(a))
      for (const o of observers.slice(0, 3)) {
        if ((await lab.cluster.members(o)).get(peerId)?.state === 'alive') return { agent, after, seconds: Math.round((Date.now() - started) / 100) / 10 }
      }
    } catch {}
    await sleep(500)
  }
  return { agent, after, seconds: null }
}

/** Converged: every agent sees all alive and one scheduler, deployments placed once and running as asked, outboxes empty, every asked-for notification in. */
async function converged (lab: ChaosLab, workload: Workload, timeoutMs: number, log: (msg: string) => void): Promise<{ ok: true } | { ok: false, why: string }> {
  const deadline = Date.now() + timeoutMs
  const started = Date.now()
  let why = ''
  while (Date.now() < deadline) {
    const before = why
    try {
      why = await notYet(lab, workload)
      if (why === '') return { ok: true }
    } catch (err: any) {
      why = String(err.message ?? err).slice(0, 200)
    }
    // what it waits for, each time that changes
    if (why.replace(/\d+/g, '#') !== before.replace(/\d+/g, '#')) log(`  +${((Date.now() - started) / 1000).toFixed(1)} s: ${why}`)
    await sleep(1000)
  }
  return { ok: false, why }
}

async function notYet (lab: ChaosLab, workload: Workload): Promise<string> {
  for (const a of lab.agents) {
    const alive = await lab.aliveCount(a)
    if (alive < lab.agents.length) return `${a} sees ${alive} of ${lab.agents.length} alive`
  }
  const leaders = await Promise.all(lab.agents.map(async a => await lab.cluster.get(a, '/v1/scheduler')))
  if (!leaders.every(l => l.leader != null && l.leader === leaders[0].leader)) return 'no single scheduler'
  const state = await finalState(lab)
  if (state.multiplePlacements > 0 || state.extraInstances > 0 || state.missingInstances > 0) return `placements: ${JSON.stringify({ multiple: state.multiplePlacements, extra: state.extraInstances, missing: state.missingInstances })}`
  if (state.pending > 0) return `${state.pending} outbox jobs pending`
  const f = notificationFigures(lab.deliveries, workload.predicts, 0)
  if (f.missing.length > 0) return `${f.missing.length} notifications not yet in (e.g. ${f.missing[0]!})`
  return ''
}

interface FinalState {
  multiplePlacements: number
  extraInstances: number
  missingInstances: number
  pending: number
  senseLeftover: number
  unsigned: number
}

/** What every agent says now. */
async function finalState (lab: ChaosLab): Promise<FinalState> {
  const deployments = (await lab.cluster.get('n1', '/v1/deployments')).deployments as Array<{ id: string, spec: { replicas: number, instance?: { name?: string } } }>
  const replicas = new Map(deployments.map(d => [d.spec.instance?.name ?? d.id, Math.min(d.spec.replicas, lab.agents.length)]))
  const running = new Map<string, number>()
  let multiplePlacements = 0
  let pending = 0
  let senseLeftover = 0
  let unsigned = 0
  for (const a of lab.agents) {
    const status = await lab.cluster.get(a, '/v1/status')
    for (const i of status.runtime?.instances ?? []) if (i.state === 'running') running.set(i.name, (running.get(i.name) ?? 0) + 1)
    for (const d of deployments) {
      const placements = (await lab.cluster.get(a, `/v1/registry?prefix=${encodeURIComponent(`placement/${d.id}/`)}`)).count
      if (placements > 1) multiplePlacements++
    }
    const outbox = await lab.cluster.get(a, '/v1/outbox')
    pending += outbox.pending
    senseLeftover += outbox.dead.length + (outbox.jobs as Array<{ instance: string }>).filter(j => j.instance === 'sense').length
    const bundles = (await lab.cluster.get(a, '/v1/bundles')).bundles as Array<{ digest: string }>
    unsigned += bundles.filter(b => b.digest !== lab.bundleDigest).length
    const rogue = (await lab.cluster.get(a, `/v1/registry?prefix=${encodeURIComponent('deployment/rogue-')}`)).count
    unsigned += rogue
    unsigned += (status.runtime?.instances ?? []).filter((i: { name: string }) => i.name.startsWith('rogue-')).length
  }
  let extraInstances = 0
  let missingInstances = 0
  for (const [name, n] of running) extraInstances += Math.max(0, n - (replicas.get(name) ?? 0))
  for (const [name, n] of replicas) missingInstances += Math.max(0, n - (running.get(name) ?? 0))
  return { multiplePlacements, extraInstances, missingInstances, pending, senseLeftover, unsigned }
}
