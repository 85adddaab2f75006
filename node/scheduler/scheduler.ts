import { autoscaleStep, type AutoscaleState } from './autoscale.ts'
import { instanceKey, placementKey, zoneOf } from './keys.ts'
import { stepUpdate, type NodeReport } from './model-update.ts'
import { choosePlacement, type Candidate } from './placement.ts'
import { parsePlacement, placedBy, winningPlacement, type PlacementAuthority, type PlacementRecord } from './placements.ts'
import { ProgressWatch, type ProgressInit } from './progress.ts'
import { parseDeploymentSpec, type DeploymentSpec, type ParseOptions } from './spec.ts'
import { SerialPass } from './serial.ts'
import { WriteBudget } from './throttle.ts'
import { activePeriod } from './window.ts'
import type { Election } from './election.ts'
import type { HealthRecord, Member, NodeRecord } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

/** A deployment as stored: the spec plus the registry timestamp of its entry. */
export interface StoredDeployment {
  spec: DeploymentSpec
  ts: [number, number]
}

export interface SchedulerComponents {
  peerId: PeerId
  registry: Pick<Registry, 'set' | 'delete' | 'list' | 'get' | 'value' | 'onChange'>
  membership: { members(): readonly Member[] }
  election: Pick<Election, 'isLeader' | 'leader' | 'zone'> & PlacementAuthority
  /** Bundle digest for a model reference, when the mesh knows one. */
  resolveBundle(model: DeploymentSpec['model']): string | undefined
  /** The version a bundle's manifest declares, when the mesh knows it (for the update's status). */
  bundleVersion?(digest: string): string | undefined
  logger: Logger
  metrics?: { invalidDeployment(): void, placementWritten(): void }
  parseOptions?: ParseOptions
}

export interface SchedulerInit {
  /** A pass at least this often. @default 1000 */
  intervalMs?: number
  /** Passes at most this often, however many changes arrive. @default 200 */
  minPassGapMs?: number
  /** One deployment's placement is written at most once per this long; churn doubles it. @default 1000 */
  minRewriteMs?: number
  /** … up to this. @default 60_000 */
  maxRewriteMs?: number
  /** When a placed node that makes no progress is given up on. */
  progress?: ProgressInit
}

/** Valid deployments in the registry; invalid ones are counted and skipped. */
export function readDeployments (registry: Pick<Registry, 'list'>, options: ParseOptions = {}, onInvalid?: (id: string, err: Error) => void): Map<string, StoredDeployment> {
  const out = new Map<string, StoredDeployment>()
  for (const e of registry.list('deployment/')) {
    const id = e.key.slice('deployment/'.length)
    try {
      const spec = parseDeploymentSpec(e.value, options)
      if (spec.id !== id) throw new Error(`deployment/${id} holds a spec for "${spec.id}"`)
      out.set(id, { spec, ts: e.ts })
    } catch (err: any) {
      onInvalid?.(id, err)
    }
  }
  return out
}

export const instanceName = (spec: DeploymentSpec): string => typeof spec.instance.name === 'string' ? spec.instance.name : spec.model.name

/**
 * The active scheduler's work: for every deployment in its zone, choose the
 * nodes (constraints, policy, autoscaling, progress) and write its placement
 * with its term. Every node also retires its own placements that no longer
 * count.
 *
 * A pass is idempotent (it writes only what differs from what it wrote),
 * passes run at most every `minPassGapMs` however many changes arrive, and
 * each placement has a write budget that backs off under churn: whatever
 * peers or local processes write, the scheduler cannot be driven to write
 * in a loop.
 */
export class Scheduler implements Startable {
  readonly #c: SchedulerComponents
  readonly #self: string
  readonly #intervalMs: number
  readonly #autoscale = new Map<string, AutoscaleState>()
  readonly #invalid = new Set<string>()
  readonly #budget: WriteBudget
  readonly #progress: ProgressWatch
  #term: number | undefined
  #timer?: NodeJS.Timeout
  #off: Array<() => void> = []
  readonly #passes: SerialPass

  constructor (components: SchedulerComponents, init: SchedulerInit = {}) {
    this.#c = components
    this.#passes = new SerialPass(async () => { await this.pass() }, err => { this.#c.logger.error({ err }, 'scheduling pass failed') }, init.minPassGapMs ?? 200)
    this.#self = components.peerId.toString()
    this.#intervalMs = init.intervalMs ?? 1000
    this.#budget = new WriteBudget(init.minRewriteMs ?? 1000, init.maxRewriteMs ?? 60_000)
    this.#progress = new ProgressWatch(init.progress)
  }

  async start (): Promise<void> {
    this.#passes.reopen()
    for (const prefix of ['deployment/', 'placement/', 'node/']) {
      this.#off.push(this.#c.registry.onChange(prefix, () => { this.kick() }))
    }
    this.#timer = setInterval(() => { this.kick() }, this.#intervalMs)
  }

  async stop (): Promise<void> {
    this.#passes.close()
    clearInterval(this.#timer)
    for (const off of this.#off) off()
    this.#off = []
  }

  /** Run a pass soon; passes never overlap. */
  kick (): void {
    this.#passes.request()
  }

  async pass (now = Date.now()): Promise<void> {
    const mono = performance.now()
    this.#budget.prune(mono)
    const deployments = readDeployments(this.#c.registry, this.#c.parseOptions, (id, err) => {
      if (this.#invalid.has(id)) return
      this.#invalid.add(id)
      this.#c.metrics?.invalidDeployment()
      this.#c.logger.warn({ deployment: id, err: err.message }, 'ignoring invalid deployment')
    })
    const leading = this.#c.election.isLeader()
    await this.#retire(deployments, leading, mono)
    if (!leading) {
      this.#autoscale.clear()
      this.#progress.clear()
      this.#term = undefined
      return
    }
    const term = this.#c.election.leader()!.term
    if (term !== this.#term) {
      // a new term judges progress afresh: the nodes it inherits get their full deadline
      this.#progress.clear()
      this.#term = term
    }
    const zone = this.#c.election.zone
    const candidates = this.candidates()
    const load = new Map(candidates.map(c => [c.peerId, c.processCpuPct]))
    const instanceCounts = new Map<string, number>()
    for (const c of candidates) instanceCounts.set(c.peerId, c.instances)
    for (const [id, { spec, ts }] of deployments) {
      if (zoneOf(spec.placement.labels) !== zone) continue
      const key = placementKey(id, this.#self)
      const mine = parsePlacement(this.#c.registry.value(key))
      const bundle = this.#c.resolveBundle(spec.model)
      if (bundle == null) {
        this.#c.logger.debug({ deployment: id, model: spec.model }, 'no bundle known for the model yet')
        // one of ours that is not of this term (forged, or left over) must not stand
        if (mine != null && mine.term !== term) await this.#delete(id, key, 'not of this term', mono)
        continue
      }
      const current = winningPlacement(this.#c.registry, id, this.#c.election, zone)
      const replicas = this.#replicas(id, spec, current, load, now)
      const stuck = spec.placement.policy === 'pinned' ? new Set<string>() : this.#progress.excluded(id, now)
      const live = candidates.map(c => ({
        ...c,
        instances: instanceCounts.get(c.peerId) ?? 0,
        excluded: stuck.has(c.peerId) ? [...c.excluded, id] : c.excluded
      }))
      const nodes = choosePlacement(spec, live, current?.nodes ?? [], replicas)
      for (const n of nodes) if (!(current?.nodes ?? []).includes(n)) instanceCounts.set(n, (instanceCounts.get(n) ?? 0) + 1)
      const scaledAt = this.#autoscale.get(id)?.changedAt
      const decision = stepUpdate({
        previous: current,
        target: bundle,
        version: digest => this.#c.bundleVersion?.(digest),
        deploymentTs: ts,
        nodes,
        active: activePeriod(spec, now).active,
        spec,
        report: node => this.#report(node, id, instanceName(spec)),
        now
      })
      if (decision.event != null) this.#c.logger.info({ deployment: id, phase: decision.update?.phase, from: decision.update?.fromVersion, to: decision.update?.toVersion, reason: decision.update?.reason }, decision.event)
      const record: PlacementRecord = { term, nodes, replicas, bundle: decision.bundle, deploymentTs: ts, at: now, ...(scaledAt == null ? {} : { scaledAt }), ...(decision.update == null ? {} : { update: decision.update }) }
      const same = mine != null && mine.term === term && mine.replicas === replicas && mine.bundle === record.bundle &&
        mine.deploymentTs?.[0] === ts[0] && mine.deploymentTs?.[1] === ts[1] && sameNodes(mine.nodes, nodes) &&
        JSON.stringify(mine.update) === JSON.stringify(record.update)
      if (!same) {
        if (!this.#budget.allows(id, mono)) {
          this.#c.logger.debug({ deployment: id, delayMs: this.#budget.delayOf(id) }, 'placement changed again too soon: waiting')
          continue
        }
        this.#budget.wrote(id, mono)
        await this.#c.registry.set(key, record)
        this.#c.metrics?.placementWritten()
        this.#c.logger.info({ deployment: id, term, nodes, replicas }, 'placement written')
      }
      if (spec.placement.policy !== 'pinned' && activePeriod(spec, now).active) this.#watchProgress(id, spec, nodes, now)
    }
  }

  /** What a node's instance entry says about the deployment, for its model update. */
  #report (node: string, id: string, name: string): NodeReport {
    const v = this.#c.registry.value<InstanceEntry>(instanceKey(node, name))
    if (v == null || typeof v !== 'object' || (v.deployment != null && v.deployment !== id)) return {}
    const out: NodeReport = {}
    if (v.state === 'running' && typeof v.bundle === 'string') out.running = v.bundle
    const p = v.predicts
    if (p != null && Number.isSafeInteger(p.ok) && Number.isSafeInteger(p.errors)) out.predicts = { ok: p.ok!, errors: p.errors! }
    // a failed hot swap leaves the old instance running and says so in `next`; a failed start fails the entry itself
    const failed = v.next?.state === 'failed' ? v.next : v.state === 'failed' ? v : undefined
    if (failed != null && typeof failed.bundle === 'string' && Number.isFinite(failed.at)) {
      out.failed = { bundle: failed.bundle, reason: String(failed.reason ?? 'failed').slice(0, 512), at: failed.at! }
    }
    return out
  }

  /** Placed nodes that show no progress past the deadline are placed around on the next pass. */
  #watchProgress (id: string, spec: DeploymentSpec, nodes: string[], now: number): void {
    const name = instanceName(spec)
    const late = this.#progress.observe(id, nodes, node => {
      const v = this.#c.registry.value<{ state?: unknown, deployment?: unknown }>(instanceKey(node, name))
      if (v == null || (v.deployment != null && v.deployment !== id)) return undefined
      return typeof v.state === 'string' ? v.state : undefined
    }, now)
    if (late.length === 0) return
    this.#c.logger.warn({ deployment: id, nodes: late }, 'placed nodes made no progress: placing elsewhere')
    this.kick()
  }

  /**
   * Live gateways and servers with what placement needs to know. A node
   * whose clock disagrees with the fleet is left out: peers refuse its
   * writes, so it could not report what it runs (issue 14, clock skew).
   */
  candidates (): Array<Candidate & { processCpuPct: number }> {
    const running = new Map<string, number>()
    for (const e of this.#c.registry.list<{ state?: string }>('instance/')) {
      const peer = e.key.split('/')[1]!
      if (e.value?.state === 'running' || e.value?.state === 'starting' || e.value?.state === 'pulling') running.set(peer, (running.get(peer) ?? 0) + 1)
    }
    return this.#c.membership.members().filter(m => m.state !== 'dead' && m.clockSkewed !== true).map(m => {
      const node = this.#c.registry.get(`node/${m.peerId}`)?.value as (NodeRecord & { drained?: boolean, excluded?: string[] }) | undefined
      const health = m.health as HealthRecord | undefined
      return {
        peerId: m.peerId,
        state: m.state === 'alive' ? 'alive' as const : 'suspect' as const,
        ...(m.role == null ? {} : { role: m.role }),
        labels: m.labels,
        sensorTypes: (node?.sensors ?? []).flatMap(s => s.measures == null ? [s.type] : [s.type, s.measures]),
        cpuPct: health?.cpuPct ?? 0,
        processCpuPct: health?.processCpuPct ?? 0,
        instances: running.get(m.peerId) ?? 0,
        drained: node?.drained === true,
        excluded: Array.isArray(node?.excluded) ? node.excluded : []
      }
    })
  }

  #replicas (id: string, spec: DeploymentSpec, current: PlacementRecord | undefined, load: Map<string, number>, now: number): number {
    const a = spec.autoscale
    if (a == null) return spec.replicas
    let state = this.#autoscale.get(id)
    if (state == null) {
      // a new scheduler resumes where the placement left off
      state = { replicas: current?.replicas ?? Math.max(a.minReplicas, Math.min(a.maxReplicas, spec.replicas)), changedAt: current?.scaledAt ?? 0 }
    }
    const samples = (current?.nodes ?? []).map(n => load.get(n)).filter((v): v is number => v != null)
    const avg = samples.length === 0 ? undefined : samples.reduce((s, v) => s + v, 0) / samples.length
    const next = autoscaleStep(a, state, avg, now)
    if (next.replicas !== state.replicas) this.#c.logger.info({ deployment: id, from: state.replicas, to: next.replicas, avgCpuPct: avg }, 'autoscaling')
    this.#autoscale.set(id, next)
    return next.replicas
  }

  /**
   * Delete this node's placements that do not count: for a deployment that
   * is gone, invalid or of another zone; with a term this node never led
   * (forged through its API, or left over); or, once it no longer leads,
   * superseded by the current scheduler's own placement. The current
   * scheduler never deletes its placement because of what another wrote.
   */
  async #retire (deployments: Map<string, StoredDeployment>, leading: boolean, mono: number): Promise<void> {
    const zone = this.#c.election.zone
    for (const id of placedBy(this.#c.registry, this.#self)) {
      const key = placementKey(id, this.#self)
      const mine = parsePlacement(this.#c.registry.value(key))
      const stored = deployments.get(id)
      let reason: string | undefined
      if (stored == null) reason = 'deployment gone or invalid'
      else if (zoneOf(stored.spec.placement.labels) !== zone) reason = 'deployment of another zone'
      else if (mine == null) reason = 'not a placement'
      else if (!leading) {
        const leader = this.#c.election.leaderOf(zone)
        const led = this.#c.election.followed(zone).some(l => l.peerId === this.#self && l.term === mine.term)
        if (!led && !(leader?.peerId === this.#self && leader.term === mine.term)) reason = 'a term this node never led'
        else if (leader != null && leader.peerId !== this.#self && parsePlacement(this.#c.registry.value(placementKey(id, leader.peerId)))?.term === leader.term) reason = 'superseded'
      }
      if (reason != null) {
        await this.#delete(id, key, reason, mono)
        if (stored == null) this.#progress.forget(id)
      }
    }
  }

  async #delete (id: string, key: string, reason: string, mono: number): Promise<void> {
    if (!this.#budget.allows(id, mono)) return
    this.#budget.wrote(id, mono)
    await this.#c.registry.delete(key)
    this.#c.logger.info({ deployment: id, reason }, 'placement retired')
  }
}

interface InstanceEntry {
  state?: string
  bundle?: unknown
  deployment?: unknown
  reason?: unknown
  at?: number
  predicts?: { ok?: number, errors?: number }
  next?: { state?: string, bundle?: unknown, reason?: unknown, at?: number }
}

function sameNodes (a: string[] | undefined, b: string[]): boolean {
  return a != null && a.length === b.length && a.every((n, i) => n === b[i])
}
