import { zoneOf } from './keys.ts'
import { bundleFor } from './model-update.ts'
import { winningPlacement, type PlacementAuthority } from './placements.ts'
import { instanceName, readDeployments, type StoredDeployment } from './scheduler.ts'
import { activePeriod } from './window.ts'
import { SerialPass } from './serial.ts'
import type { ParseOptions } from './spec.ts'
import type { NodeRecord } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

/** The runtime as the reconciler drives it. */
export interface InstanceController {
  has(name: string): boolean
  run(request: { bundle: string, spec?: Record<string, unknown>, deployment?: string }, options: { persist?: boolean }): Promise<unknown>
  stopInstance(name: string): Promise<void>
  /** start the new instance beside the running one of `name`, swap it in once AVAILABLE, then stop the old (`before` runs first: the pull) */
  replace(name: string, request: { bundle: string, spec?: Record<string, unknown>, deployment?: string }, options: { before?: () => Promise<void> }): Promise<unknown>
}

/** Makes a bundle available on this node, pulling it from peers if needed. */
export interface BundleFetcher {
  ensure(digest: string, signal?: AbortSignal): Promise<void>
}

export interface ReconcilerComponents {
  peerId: PeerId
  registry: Pick<Registry, 'set' | 'list' | 'get' | 'value' | 'onChange'>
  runtime: InstanceController
  bundles: BundleFetcher
  /** which schedulers' placements count (the election) */
  placements: PlacementAuthority
  logger: Logger
  parseOptions?: ParseOptions
}

export interface ReconcilerInit {
  /** @default 1000 */
  intervalMs?: number
  /** first retry after a failed start; doubles to 60 s. @default 2000 */
  retryMs?: number
  /** Passes at most this often, however many changes arrive. @default 100 */
  minPassGapMs?: number
}

interface Managed {
  name: string
  bundle: string
  deploymentTs: string
  /** the deployment's `instance` part it was started with */
  instance: string
}

/**
 * Brings this node's instances in line with the placements that name it:
 * pull the bundle, verify, start; stop what it is no longer named in or
 * what falls outside its window. Windows are judged on this node's clock,
 * so instances start and stop on time with no scheduler reachable, and a
 * restarted agent starts exactly what should run now.
 */
export class Reconciler implements Startable {
  readonly #c: ReconcilerComponents
  readonly #self: string
  readonly #intervalMs: number
  readonly #retryMs: number
  readonly #managed = new Map<string, Managed>()
  readonly #failures = new Map<string, { delay: number, next: number, bundle: string }>()
  #timer?: NodeJS.Timeout
  #boundary?: NodeJS.Timeout
  #off: Array<() => void> = []
  readonly #passes: SerialPass
  #stopped = false

  constructor (components: ReconcilerComponents, init: ReconcilerInit = {}) {
    this.#c = components
    this.#passes = new SerialPass(async () => { await this.pass() }, err => { this.#c.logger.error({ err }, 'reconcile pass failed') }, init.minPassGapMs ?? 100)
    this.#self = components.peerId.toString()
    this.#intervalMs = init.intervalMs ?? 1000
    this.#retryMs = init.retryMs ?? 2000
  }

  async start (): Promise<void> {
    this.#stopped = false
    this.#passes.reopen()
    for (const prefix of ['deployment/', 'placement/', `node/${this.#self}`]) {
      this.#off.push(this.#c.registry.onChange(prefix, () => { this.kick() }))
    }
    this.#timer = setInterval(() => { this.kick() }, this.#intervalMs)
    this.kick()
  }

  async stop (): Promise<void> {
    this.#stopped = true
    this.#passes.close()
    clearInterval(this.#timer)
    clearTimeout(this.#boundary)
    for (const off of this.#off) off()
    this.#off = []
  }

  /** Deployments this node runs now, by id. */
  managed (): Map<string, { name: string, bundle: string }> {
    return new Map([...this.#managed].map(([id, m]) => [id, { name: m.name, bundle: m.bundle }]))
  }

  /** Run a pass soon; passes never overlap. */
  kick (): void {
    if (this.#stopped) return
    this.#passes.request()
  }

  /** What should run here now (deployment id → what to run), and when that next changes. */
  desired (now = Date.now()): { wanted: Map<string, { stored: StoredDeployment, bundle: string, name: string }>, nextChange: number | null } {
    const out = new Map<string, { stored: StoredDeployment, bundle: string, name: string }>()
    let nextChange: number | null = null
    const self = this.#c.registry.value<NodeRecord & { drained?: boolean, excluded?: string[] }>(`node/${this.#self}`)
    if (self?.drained === true) return { wanted: out, nextChange }
    for (const [id, stored] of readDeployments(this.#c.registry, this.#c.parseOptions)) {
      if (self?.excluded?.includes(id) === true) continue
      const placement = winningPlacement(this.#c.registry, id, this.#c.placements, zoneOf(stored.spec.placement.labels))
      if (placement == null || !placement.nodes.includes(this.#self)) continue
      const period = activePeriod(stored.spec, now)
      const name = instanceName(stored.spec)
      if (period.active) out.set(id, { stored, bundle: bundleFor(placement, this.#self), name })
      if (period.nextChange != null && (nextChange == null || period.nextChange < nextChange)) nextChange = period.nextChange
    }
    return { wanted: out, nextChange }
  }

  async pass (now = Date.now()): Promise<void> {
    const { wanted: desired, nextChange } = this.desired(now)
    this.#scheduleBoundary(nextChange, now)
    for (const [id, m] of this.#managed) {
      const want = desired.get(id)
      if (want == null || want.name !== m.name) {
        await this.#stop(id, m, want == null ? 'no longer placed here or outside its window' : 'deployment changed')
        continue
      }
      const instance = JSON.stringify(want.stored.spec.instance)
      if (want.bundle === m.bundle && instance === m.instance) {
        // a change that leaves this instance as it is (replicas, placement, canary) restarts nothing
        m.deploymentTs = tsKey(want.stored.ts)
        continue
      }
      const failure = this.#failures.get(id)
      if (failure != null && failure.bundle === want.bundle && failure.next > now) continue
      await this.#replace(id, m, want)
    }
    for (const [id, want] of desired) {
      if (this.#managed.has(id)) continue
      const failure = this.#failures.get(id)
      if (failure != null && failure.next > now) continue
      await this.#start(id, want)
    }
  }

  /** A new model version (or instance spec) for a running instance: hot swap, the old one serving until the new one is AVAILABLE. */
  async #replace (id: string, m: Managed, want: { stored: StoredDeployment, bundle: string, name: string }): Promise<void> {
    const { name, bundle } = want
    try {
      await this.#c.runtime.replace(name, { bundle, spec: { ...want.stored.spec.instance, name }, deployment: id }, {
        before: async () => { await this.#c.bundles.ensure(bundle, AbortSignal.timeout(10 * 60_000)) }
      })
      this.#managed.set(id, { name, bundle, deploymentTs: tsKey(want.stored.ts), instance: JSON.stringify(want.stored.spec.instance) })
      this.#failures.delete(id)
      this.#c.logger.info({ deployment: id, model: name, from: m.bundle, to: bundle }, 'deployment instance replaced')
    } catch (err: any) {
      // the old instance runs on; the runtime's entry says why the new one did not
      if (!this.#c.runtime.has(name)) this.#managed.delete(id)
      this.#backoff(id, bundle)
      this.#c.logger.warn({ deployment: id, model: name, bundle, reason: err.message }, 'replacing a deployment instance failed')
    }
  }

  async #start (id: string, want: { stored: StoredDeployment, bundle: string, name: string }): Promise<void> {
    const { name, bundle } = want
    if (this.#c.runtime.has(name)) {
      this.#fail(id, name, `model ${name} already runs on this node outside deployment ${id}`, bundle)
      return
    }
    this.#managed.set(id, { name, bundle, deploymentTs: tsKey(want.stored.ts), instance: JSON.stringify(want.stored.spec.instance) })
    try {
      await this.#announce(name, { state: 'pulling', deployment: id, bundle })
      await this.#c.bundles.ensure(bundle, AbortSignal.timeout(10 * 60_000))
      await this.#c.runtime.run({ bundle, spec: { ...want.stored.spec.instance, name }, deployment: id }, { persist: false })
      this.#failures.delete(id)
      this.#c.logger.info({ deployment: id, model: name, bundle }, 'deployment instance started')
    } catch (err: any) {
      this.#managed.delete(id)
      this.#fail(id, name, err.message, bundle)
    }
  }

  async #stop (id: string, m: Managed, reason: string): Promise<void> {
    this.#managed.delete(id)
    try {
      if (this.#c.runtime.has(m.name)) await this.#c.runtime.stopInstance(m.name)
      this.#c.logger.info({ deployment: id, model: m.name, reason }, 'deployment instance stopped')
    } catch (err: any) {
      this.#c.logger.warn({ deployment: id, err: err.message }, 'stopping a deployment instance failed')
    }
  }

  #fail (id: string, name: string, reason: string, bundle: string): void {
    const delay = this.#backoff(id, bundle)
    this.#c.logger.warn({ deployment: id, model: name, reason, retryInMs: delay }, 'deployment instance failed to start')
    void this.#announce(name, { state: 'failed', deployment: id, bundle, reason, at: Date.now() })
  }

  /** Wait before trying `bundle` for `id` again, doubling to 60 s. */
  #backoff (id: string, bundle: string): number {
    const previous = this.#failures.get(id)
    const delay = Math.min(60_000, previous == null || previous.bundle !== bundle ? this.#retryMs : previous.delay * 2)
    this.#failures.set(id, { delay, next: Date.now() + delay, bundle })
    return delay
  }

  #scheduleBoundary (at: number | null, now: number): void {
    if (at == null || at - now > 24 * 3600_000) return
    clearTimeout(this.#boundary)
    // wake right after the boundary; the periodic pass is a backstop
    this.#boundary = setTimeout(() => { this.kick() }, Math.max(0, at - now) + 5)
  }

  async #announce (name: string, value: Record<string, unknown>): Promise<void> {
    await this.#c.registry.set(`instance/${this.#self}/${name}`, value).catch(() => {})
  }
}

const tsKey = (ts: [number, number]): string => `${ts[0]}.${ts[1]}`
