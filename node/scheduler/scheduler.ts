import { autoscaleStep, type AutoscaleState } from './autoscale.ts'
import { deploymentKey, placementKey, zoneOf } from './keys.ts'
import { choosePlacement, type Candidate } from './placement.ts'
import { placedDeployments, winningPlacement, type PlacementRecord } from './placements.ts'
import { comparePrecedence } from './precedence.ts'
import { parseDeploymentSpec, type DeploymentSpec, type ParseOptions } from './spec.ts'
import { SerialPass } from './serial.ts'
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
  registry: Pick<Registry, 'set' | 'delete' | 'list' | 'get' | 'onChange'>
  membership: { members(): Member[] }
  election: Pick<Election, 'isLeader' | 'leader' | 'zone'>
  /** Bundle digest for a model reference, when the mesh knows one. */
  resolveBundle(model: DeploymentSpec['model']): string | undefined
  logger: Logger
  metrics?: { invalidDeployment(): void, placementWritten(): void }
  parseOptions?: ParseOptions
}

export interface SchedulerInit {
  /** @default 1000 */
  intervalMs?: number
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

/**
 * The active scheduler's work: for every deployment in its zone, choose the
 * nodes (constraints, policy, autoscaling) and write its placement with its
 * term. Every node also retires its own placements once a higher term has
 * superseded them.
 */
export class Scheduler implements Startable {
  readonly #c: SchedulerComponents
  readonly #self: string
  readonly #intervalMs: number
  readonly #autoscale = new Map<string, AutoscaleState>()
  readonly #invalid = new Set<string>()
  /** deployments whose placement is held by a scheduler that takes precedence: deployment → `scheduler@term`, to log each once */
  readonly #yielded = new Map<string, string>()
  #timer?: NodeJS.Timeout
  #off: Array<() => void> = []
  readonly #passes: SerialPass

  constructor (components: SchedulerComponents, init: SchedulerInit = {}) {
    this.#c = components
    this.#passes = new SerialPass(async () => { await this.pass() }, err => { this.#c.logger.error({ err }, 'scheduling pass failed') })
    this.#self = components.peerId.toString()
    this.#intervalMs = init.intervalMs ?? 1000
  }

  async start (): Promise<void> {
    for (const prefix of ['deployment/', 'placement/', 'node/']) {
      this.#off.push(this.#c.registry.onChange(prefix, () => { this.kick() }))
    }
    this.#timer = setInterval(() => { this.kick() }, this.#intervalMs)
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    for (const off of this.#off) off()
    this.#off = []
  }

  /** Run a pass soon; passes never overlap. */
  kick (): void {
    this.#passes.request()
  }

  async pass (now = Date.now()): Promise<void> {
    const deployments = readDeployments(this.#c.registry, this.#c.parseOptions, (id, err) => {
      if (this.#invalid.has(id)) return
      this.#invalid.add(id)
      this.#c.metrics?.invalidDeployment()
      this.#c.logger.warn({ deployment: id, err: err.message }, 'ignoring invalid deployment')
    })
    await this.#retireSuperseded(deployments)
    if (!this.#c.election.isLeader()) {
      this.#autoscale.clear()
      this.#yielded.clear()
      return
    }
    const term = this.#c.election.leader()!.term
    const candidates = this.candidates()
    const load = new Map(candidates.map(c => [c.peerId, c.processCpuPct]))
    const instanceCounts = new Map<string, number>()
    for (const c of candidates) instanceCounts.set(c.peerId, c.instances)
    for (const [id, { spec, ts }] of deployments) {
      if (zoneOf(spec.placement.labels) !== this.#c.election.zone) continue
      const bundle = this.#c.resolveBundle(spec.model)
      if (bundle == null) {
        this.#c.logger.debug({ deployment: id, model: spec.model }, 'no bundle known for the model yet')
        continue
      }
      const current = winningPlacement(this.#c.registry, id)
      if (current != null && current.scheduler !== this.#self &&
        comparePrecedence({ term: current.term, peerId: current.scheduler }, { term, peerId: this.#self }) < 0) {
        // A placement that takes precedence over any this node could write
        // is here already: this node still leads by its own view while that
        // scheduler's claim is not live to it (a healed partition: the
        // registry syncs before heartbeats revive the other side). A write
        // would lose and be retired on the next pass, and the retirement
        // starts another pass: a write/retire loop at full speed that
        // starves the node. The election settles who leads; wait for it.
        const holder = `${current.scheduler}@${current.term}`
        if (this.#yielded.get(id) !== holder) {
          this.#yielded.set(id, holder)
          this.#c.logger.info({ deployment: id, term, holder: current.scheduler, holderTerm: current.term }, 'placement held by a scheduler that takes precedence; not writing')
        }
        continue
      }
      this.#yielded.delete(id)
      const replicas = this.#replicas(id, spec, current, load, now)
      const live = candidates.map(c => ({ ...c, instances: instanceCounts.get(c.peerId) ?? 0 }))
      const nodes = choosePlacement(spec, live, current?.nodes ?? [], replicas)
      for (const n of nodes) if (!(current?.nodes ?? []).includes(n)) instanceCounts.set(n, (instanceCounts.get(n) ?? 0) + 1)
      const mine = this.#c.registry.get(placementKey(id, this.#self))?.value as PlacementRecord | undefined
      const scaledAt = this.#autoscale.get(id)?.changedAt
      const record: PlacementRecord = { term, nodes, replicas, bundle, deploymentTs: ts, at: now, ...(scaledAt == null ? {} : { scaledAt }) }
      if (mine != null && mine.term === term && mine.replicas === replicas && mine.bundle === bundle &&
        mine.deploymentTs?.[0] === ts[0] && mine.deploymentTs?.[1] === ts[1] && sameNodes(mine.nodes, nodes)) continue
      await this.#c.registry.set(placementKey(id, this.#self), record)
      this.#c.metrics?.placementWritten()
      this.#c.logger.info({ deployment: id, term, nodes, replicas }, 'placement written')
    }
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
        excluded: node?.excluded ?? []
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

  /** Delete this node's placements that a higher term replaced, or whose deployment is gone. */
  async #retireSuperseded (deployments: Map<string, StoredDeployment>): Promise<void> {
    for (const id of placedDeployments(this.#c.registry)) {
      const mine = this.#c.registry.get(placementKey(id, this.#self))
      if (mine == null || mine.deleted) continue
      const winner = winningPlacement(this.#c.registry, id)
      const gone = !deployments.has(id) && this.#c.registry.get(deploymentKey(id))?.deleted === true
      if (gone || (winner != null && winner.scheduler !== this.#self)) {
        await this.#c.registry.delete(placementKey(id, this.#self))
      }
    }
  }
}

function sameNodes (a: string[] | undefined, b: string[]): boolean {
  return a != null && a.length === b.length && a.every((n, i) => n === b[i])
}
