import { TypedEventEmitter } from '@libp2p/interface'
import { gatewayStatus, healthView, instanceView, labelsView, modelStatus, sensorViews, type GatewayStatus, type InstanceView, type ModelStatus, type NodeView } from './monitoring.ts'
import type { Member, NodeRecord } from '../../node/membership/membership.ts'
import type { RegistryEntry } from '../../node/registry/entry.ts'
import type { Registry } from '../../node/registry/registry.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export const DEFAULT_REFRESH_MS = 250
/** Clock offsets move without any event, and a missed event must not stick: compare every member this often. */
export const DEFAULT_SWEEP_MS = 5000

export interface NodesViewComponents {
  registry: Pick<Registry, 'list' | 'value' | 'onChange'>
  /** liveness (and clocks) as the embedded agent's membership judges them; never health freshness */
  members(): readonly Member[]
  /** one member as `members()` lists it, undefined when it is not one: a change recomputes only its node */
  member(peerId: string): Member | undefined
  /** liveness and clock changes come from probes, not from registry writes */
  membership?: Pick<EventTarget, 'addEventListener' | 'removeEventListener'>
  /** where a node whose view failed is reported (the view keeps its last good state) */
  logger?: Pick<Logger, 'error'>
}

export interface NodesViewInit {
  /** Coalesce changes for at most this long before applying them. @default DEFAULT_REFRESH_MS */
  refreshMs?: number
  /** Compare every member's liveness and clock this often. @default DEFAULT_SWEEP_MS */
  sweepMs?: number
}

export interface NodesChange {
  changed: NodeView[]
  removed: string[]
  /** the model status changed too */
  models: boolean
}

export interface NodesViewEvents {
  change: CustomEvent<NodesChange>
}

const INSTANCE_PREFIX = 'instance/'

/**
 * The coordinator's picture of the fleet, kept per node. A registry change
 * under `node/<peer>`, `health/<peer>` or `instance/<peer>/…`, or a
 * membership state change, marks only that node; at most every
 * `refreshMs` the marked nodes are recomputed (each on its own: a node
 * whose view fails keeps its last good one) and serialised, and a `change`
 * names the ones whose JSON differs. Every `sweepMs` the members are
 * compared (state and clock only) to catch what comes without an event.
 * The sorted list, the `{nodes, count}` JSON and the instance list are
 * derived when first read after a change, so a quiet fleet serves
 * `GET /api/v1/nodes` as a string copy and a busy one pays per changed
 * node, not per node.
 */
export class NodesView extends TypedEventEmitter<NodesViewEvents> implements Startable {
  readonly #c: NodesViewComponents
  readonly #refreshMs: number
  readonly #sweepMs: number
  readonly #views = new Map<string, { view: NodeView, json: string }>()
  /** node → instance key → instance */
  readonly #instances = new Map<string, Map<string, InstanceView>>()
  readonly #dirtyNodes = new Set<string>()
  /** instance key → its latest entry (undefined value: gone) */
  readonly #dirtyInstances = new Map<string, RegistryEntry>()
  #built = false
  #list: NodeView[] | undefined
  #json: string | undefined
  #allInstances: InstanceView[] | undefined
  #models: ModelStatus[] = []
  #modelsJson = '[]'
  #timers: NodeJS.Timeout[] = []
  #off: Array<() => void> = []

  constructor (components: NodesViewComponents, init: NodesViewInit = {}) {
    super()
    this.#c = components
    this.#refreshMs = init.refreshMs ?? DEFAULT_REFRESH_MS
    this.#sweepMs = init.sweepMs ?? DEFAULT_SWEEP_MS
  }

  async start (): Promise<void> {
    for (const prefix of ['node/', 'health/']) {
      this.#off.push(this.#c.registry.onChange(prefix, change => { this.#dirtyNodes.add(change.key.slice(prefix.length)) }))
    }
    this.#off.push(this.#c.registry.onChange(INSTANCE_PREFIX, change => { this.#dirtyInstances.set(change.key, change.entry) }))
    const onState = (evt: Event): void => {
      const peerId = (evt as CustomEvent<{ peerId?: unknown }>).detail?.peerId
      if (typeof peerId === 'string') this.#dirtyNodes.add(peerId)
    }
    this.#c.membership?.addEventListener('member:state', onState)
    this.#off.push(() => this.#c.membership?.removeEventListener('member:state', onState))
    this.#safely(() => { this.refresh() })
    const refresh = setInterval(() => {
      if (this.#dirtyNodes.size > 0 || this.#dirtyInstances.size > 0) this.#safely(() => { this.refresh() })
    }, this.#refreshMs)
    const sweep = setInterval(() => { this.#safely(() => { this.#sweep() }) }, this.#sweepMs)
    this.#timers = [refresh, sweep]
    for (const t of this.#timers) t.unref()
  }

  async stop (): Promise<void> {
    for (const t of this.#timers) clearInterval(t)
    this.#timers = []
    for (const off of this.#off) off()
    this.#off = []
  }

  /** Changes that arrived since the last refresh, applied before a read: an API answer is never older than the registry's. */
  #fresh (): void {
    if (this.#dirtyNodes.size > 0 || this.#dirtyInstances.size > 0) this.#safely(() => { this.refresh() })
  }

  list (): NodeView[] {
    this.#fresh()
    this.#list ??= [...this.#views.values()].map(v => v.view)
      .sort((a, b) => (a.role ?? '').localeCompare(b.role ?? '') || a.peerId.localeCompare(b.peerId))
    return this.#list
  }

  /** `{nodes, count}` as JSON text. */
  json (): string {
    this.#fresh()
    this.#json ??= `{"nodes":[${this.list().map(n => this.#views.get(n.peerId)!.json).join(',')}],"count":${this.#views.size}}`
    return this.#json
  }

  get (peerId: string): NodeView | undefined {
    this.#fresh()
    return this.#views.get(peerId)?.view
  }

  instances (peerId?: string): InstanceView[] {
    this.#fresh()
    if (peerId != null) return [...this.#instances.get(peerId)?.values() ?? []]
    this.#allInstances ??= [...this.#instances.values()].flatMap(m => [...m.values()])
    return this.#allInstances
  }

  gateways (): GatewayStatus {
    return gatewayStatus(this.list())
  }

  models (): ModelStatus[] {
    this.#fresh()
    return this.#models
  }

  /** Nothing a node wrote may stop the coordinator: a failure is logged and the last good state kept. */
  #safely (fn: () => void): void {
    try {
      fn()
    } catch (err) {
      this.#c.logger?.error({ err }, 'updating the nodes view failed')
    }
  }

  /**
   * Apply what changed since the last call: recompute the nodes it marked
   * (every member the first time) and tell listeners which views changed.
   */
  refresh (): void {
    let instancesChanged = false
    if (!this.#built) {
      this.#built = true
      this.#dirtyInstances.clear()
      for (const e of this.#c.registry.list(INSTANCE_PREFIX)) this.#setInstance(e.key, e)
      for (const m of this.#c.members()) this.#dirtyNodes.add(m.peerId)
      instancesChanged = true
    }
    for (const [key, entry] of this.#dirtyInstances) {
      const node = this.#setInstance(key, entry)
      if (node != null) {
        this.#dirtyNodes.add(node)
        instancesChanged = true
      }
    }
    this.#dirtyInstances.clear()
    const changed: NodeView[] = []
    const removed: string[] = []
    let statesChanged = false
    const dirty = [...this.#dirtyNodes]
    this.#dirtyNodes.clear()
    for (const peerId of dirty) {
      const before = this.#views.get(peerId)
      let after: { view: NodeView, json: string } | undefined
      try {
        const member = this.#c.member(peerId)
        if (member != null) after = this.#nodeView(member)
      } catch (err) {
        this.#c.logger?.error({ err, peer: peerId }, 'a node\'s view failed; its last good one is kept')
        continue
      }
      if (after == null) {
        if (before == null) continue
        this.#views.delete(peerId)
        removed.push(peerId)
        statesChanged = true
      } else if (before?.json !== after.json) {
        this.#views.set(peerId, after)
        changed.push(after.view)
        if (before?.view.state !== after.view.state) statesChanged = true
      }
    }
    if (changed.length > 0 || removed.length > 0) {
      this.#list = undefined
      this.#json = undefined
    }
    if (instancesChanged) this.#allInstances = undefined
    let modelsChanged = false
    // model status shows each instance's node state: it changes with instances and with states only
    if (instancesChanged || statesChanged) {
      const models = modelStatus(this.instances(), this.list())
      const modelsJson = JSON.stringify(models)
      modelsChanged = modelsJson !== this.#modelsJson
      this.#models = models
      this.#modelsJson = modelsJson
    }
    if (changed.length > 0 || removed.length > 0 || modelsChanged) {
      this.safeDispatchEvent('change', { detail: { changed, removed, models: modelsChanged } })
    }
  }

  /** Mark the members whose state or clock differ from their views, and views of members gone. */
  #sweep (): void {
    const seen = new Set<string>()
    for (const m of this.#c.members()) {
      seen.add(m.peerId)
      const v = this.#views.get(m.peerId)?.view
      const clock = clockView(m)
      if (v == null || v.state !== m.state || v.clock.offsetSec !== clock.offsetSec || v.clock.skewed !== clock.skewed) this.#dirtyNodes.add(m.peerId)
    }
    for (const peerId of this.#views.keys()) if (!seen.has(peerId)) this.#dirtyNodes.add(peerId)
    if (this.#dirtyNodes.size > 0) this.refresh()
  }

  /** Track one instance entry; returns its node, or undefined when the key names none. */
  #setInstance (key: string, entry: RegistryEntry): string | undefined {
    const view = entry.value == null ? undefined : instanceView(key, entry.value, entry.ts[0])
    const [, node] = key.split('/', 2)
    if (node == null || node === '') return undefined
    let on = this.#instances.get(node)
    if (view == null) {
      if (on?.delete(key) !== true) return undefined
      if (on.size === 0) this.#instances.delete(node)
      return node
    }
    if (on == null) this.#instances.set(node, on = new Map())
    on.set(key, view)
    return node
  }

  #nodeView (m: Member): { view: NodeView, json: string } {
    const record = this.#c.registry.value<Partial<NodeRecord>>(`node/${m.peerId}`)
    const counts = { total: 0, running: 0, failed: 0 }
    for (const i of this.#instances.get(m.peerId)?.values() ?? []) {
      counts.total++
      if (i.state === 'running') counts.running++
      if (i.state === 'failed') counts.failed++
    }
    const view: NodeView = {
      peerId: m.peerId,
      role: m.role ?? null,
      labels: labelsView(m.labels),
      state: m.state,
      since: m.since,
      self: m.self,
      addresses: Array.isArray(m.addresses) ? m.addresses.filter((a): a is string => typeof a === 'string').slice(0, 32) : [],
      version: typeof record?.version === 'string' ? record.version : null,
      backend: typeof record?.backend === 'string' ? record.backend : null,
      startedAt: typeof record?.startedAt === 'number' ? record.startedAt : null,
      sensors: sensorViews(record?.sensors),
      health: healthView(m.health),
      clock: clockView(m),
      instances: counts
    }
    return { view, json: JSON.stringify(view) }
  }
}

function clockView (m: Member): NodeView['clock'] {
  return { offsetSec: m.clockOffsetMs == null ? null : Math.round(m.clockOffsetMs / 1000), skewed: m.clockSkewed === true }
}
