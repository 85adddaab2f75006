import { TypedEventEmitter } from '@libp2p/interface'
import { gatewayStatus, healthView, instanceView, labelsView, modelStatus, sensorViews, type GatewayStatus, type InstanceView, type ModelStatus, type NodeView } from './monitoring.ts'
import type { Member, NodeRecord } from '../../node/membership/membership.ts'
import type { Registry } from '../../node/registry/registry.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export const DEFAULT_REFRESH_MS = 250
const CLOCK_REFRESH_MS = 5000

export interface NodesViewComponents {
  registry: Pick<Registry, 'list' | 'value' | 'onChange'>
  /** liveness (and clocks) as the embedded agent's membership judges them; never health freshness */
  members(): Member[]
  /** liveness and clock changes come from probes, not from registry writes */
  membership?: Pick<EventTarget, 'addEventListener' | 'removeEventListener'>
  /** where a rebuild that failed is reported (the view keeps its last good state) */
  logger?: Pick<Logger, 'error'>
}

export interface NodesViewInit {
  /** Coalesce changes for at most this long before rebuilding. @default DEFAULT_REFRESH_MS */
  refreshMs?: number
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

/**
 * The coordinator's picture of the fleet, rebuilt from the embedded
 * agent's registry and membership at most every `refreshMs` while
 * something changes, and otherwise served from memory: the list is kept
 * as ready-to-send JSON, so `GET /api/v1/nodes` costs a string copy. Each
 * rebuild reports which nodes changed, for the live event stream.
 */
export class NodesView extends TypedEventEmitter<NodesViewEvents> implements Startable {
  readonly #c: NodesViewComponents
  readonly #refreshMs: number
  #nodes: NodeView[] = []
  #byId = new Map<string, NodeView>()
  #serialized = new Map<string, string>()
  #instances: InstanceView[] = []
  #json = '{"nodes":[],"count":0}'
  #models: ModelStatus[] = []
  #modelsJson = '[]'
  #dirty = true
  #timer?: NodeJS.Timeout
  #off: Array<() => void> = []

  constructor (components: NodesViewComponents, init: NodesViewInit = {}) {
    super()
    this.#c = components
    this.#refreshMs = init.refreshMs ?? DEFAULT_REFRESH_MS
  }

  async start (): Promise<void> {
    const dirty = (): void => { this.#dirty = true }
    for (const prefix of ['node/', 'health/', 'instance/']) this.#off.push(this.#c.registry.onChange(prefix, dirty))
    this.#c.membership?.addEventListener('member:state', dirty)
    this.#off.push(() => this.#c.membership?.removeEventListener('member:state', dirty))
    // clock offsets move without any event: look again now and then
    const clocks = setInterval(dirty, CLOCK_REFRESH_MS)
    clocks.unref()
    this.#off.push(() => { clearInterval(clocks) })
    this.#safeRefresh()
    this.#timer = setInterval(() => { if (this.#dirty) this.#safeRefresh() }, this.#refreshMs)
    this.#timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    for (const off of this.#off) off()
    this.#off = []
  }

  list (): NodeView[] {
    return this.#nodes
  }

  /** `{nodes, count}` as JSON text. */
  json (): string {
    return this.#json
  }

  get (peerId: string): NodeView | undefined {
    return this.#byId.get(peerId)
  }

  instances (peerId?: string): InstanceView[] {
    return peerId == null ? this.#instances : this.#instances.filter(i => i.node === peerId)
  }

  gateways (): GatewayStatus {
    return gatewayStatus(this.#nodes)
  }

  models (): ModelStatus[] {
    return this.#models
  }

  /** A failed rebuild keeps the last good picture: nothing a node wrote may stop the coordinator. */
  #safeRefresh (): void {
    try {
      this.refresh()
    } catch (err) {
      this.#c.logger?.error({ err }, 'rebuilding the nodes view failed')
    }
  }

  /** Rebuild now. */
  refresh (): void {
    this.#dirty = false
    const instances = this.#c.registry.list('instance/').flatMap(e => instanceView(e.key, e.value, e.ts[0]) ?? [])
    const counts = new Map<string, NodeView['instances']>()
    for (const i of instances) {
      let c = counts.get(i.node)
      if (c == null) counts.set(i.node, c = { total: 0, running: 0, failed: 0 })
      c.total++
      if (i.state === 'running') c.running++
      if (i.state === 'failed') c.failed++
    }
    const nodes = this.#c.members().map(m => {
      const record = this.#c.registry.value<Partial<NodeRecord>>(`node/${m.peerId}`)
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
        clock: { offsetSec: m.clockOffsetMs == null ? null : Math.round(m.clockOffsetMs / 1000), skewed: m.clockSkewed === true },
        instances: counts.get(m.peerId) ?? { total: 0, running: 0, failed: 0 }
      }
      return view
    }).sort((a, b) => (a.role ?? '').localeCompare(b.role ?? '') || a.peerId.localeCompare(b.peerId))

    const serialized = new Map(nodes.flatMap(n => {
      try {
        return [[n.peerId, JSON.stringify(n)] as const]
      } catch (err) {
        this.#c.logger?.error({ err, peer: n.peerId }, 'a node view cannot be serialised; left out')
        return []
      }
    }))
    const changed = nodes.filter(n => this.#serialized.get(n.peerId) !== serialized.get(n.peerId))
    const removed = [...this.#serialized.keys()].filter(id => !serialized.has(id))
    const models = modelStatus(instances, nodes)
    const modelsJson = JSON.stringify(models)
    const modelsChanged = modelsJson !== this.#modelsJson

    this.#nodes = nodes
    this.#byId = new Map(nodes.map(n => [n.peerId, n]))
    this.#serialized = serialized
    this.#instances = instances
    this.#json = `{"nodes":[${[...serialized.values()].join(',')}],"count":${nodes.length}}`
    this.#models = models
    this.#modelsJson = modelsJson
    if (changed.length > 0 || removed.length > 0 || modelsChanged) {
      this.safeDispatchEvent('change', { detail: { changed, removed, models: modelsChanged } })
    }
  }
}
