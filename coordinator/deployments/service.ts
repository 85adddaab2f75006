import { TypedEventEmitter } from '@libp2p/interface'
import { validateInstanceOverrides } from '../../node/scheduler/instance-check.ts'
import { deploymentKey, zoneOf } from '../../node/scheduler/keys.ts'
import { resolveBundle } from '../../node/scheduler/resolve.ts'
import { parseDeploymentSpec, type DeploymentSpec, type ParseOptions } from '../../node/scheduler/spec.ts'
import { instanceName, readDeployments } from '../../node/scheduler/scheduler.ts'
import { deploymentStatus, type DeploymentStatus } from '../../node/scheduler/status.ts'
import type { PlacementAuthority } from '../../node/scheduler/placements.ts'
import { authorizeRegistryWrite, type Signer } from '../../packaging/trust.ts'
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts'
import type { Member, NodeRecord } from '../../node/membership/membership.ts'
import type { Registry } from '../../node/registry/registry.ts'
import type { RegistryChange } from '../../node/registry/watch.ts'
import type { Database } from '../../node/store/db.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface DeploymentsComponents {
  registry: Pick<Registry, 'get' | 'list' | 'value' | 'set' | 'delete' | 'onChange' | 'stampFor'>
  /** which schedulers' placements count: the embedded agent's election */
  placements: PlacementAuthority
  members(): readonly Member[]
  /** one member, undefined when it is not one: a node's change recomputes only its endpoint */
  member(peerId: string): Member | undefined
  /** state changes that come from silence, not from a registry write */
  membership?: Pick<EventTarget, 'addEventListener' | 'removeEventListener'>
  db: Database
  /** the fleet key: the coordinator signs every deployment it writes */
  signer: Signer
  /** Whether the repository holds this model version (the mesh may not have it advertised yet). */
  hasModel?: (name: string, version: string) => boolean
  logger: Logger
}

export interface DeploymentsInit {
  /** Coalesce changes for at most this long before recomputing. @default 250 */
  refreshMs?: number
  /** Look this often for windows that opened or closed and for schedulers that changed without a write. @default 1000 */
  tickMs?: number
}

/** Who made a deployment through the coordinator (the spec itself is closed). */
export interface DeploymentOwner {
  owner: string
  createdAt: number
}

/** A deployment's status as the coordinator shows it. */
export interface DeploymentView extends DeploymentStatus {
  /** the TF Serving name its instances answer to */
  model: string
  /** replicas asked for */
  replicas: number
  createdBy: string | null
  createdAt: number | null
  /** predict URLs on each live agent's API (any of them forwards to a replica) */
  endpoints: Array<{ node: string, url: string }>
}

export interface DeploymentsEvents {
  change: CustomEvent<DeploymentView[]>
}

const PARSE: ParseOptions = { validateInstance: validateInstanceOverrides }
/** An agent's API URL longer than this is not shown: the record is its writer's say. */
const MAX_API_CHARS = 512

/** `deployment.window.end` → `body.window.end`: the fields of the request that carried it. */
function asBodyError (err: any): never {
  if (typeof err?.field === 'string' && err.field.startsWith('deployment')) {
    const field = 'body' + String(err.field).slice('deployment'.length)
    throw new BadRequestError(String(err.message).replace(/^deployment/, 'body'), { field, cause: err })
  }
  throw err
}

/**
 * Deployments through the coordinator: it checks a spec as every agent
 * will (parseDeploymentSpec and the runtime's instance schema), signs it
 * with the fleet key and writes it to the registry through its embedded
 * agent; from there the mesh's own schedulers and reconcilers run it,
 * whether or not the coordinator stays up.
 *
 * Statuses are kept per deployment and recomputed only for the ones a
 * change touches: `deployment/<id>` and `placement/<id>/…` mark that one,
 * `instance/<node>/<name>` the ones whose instances are called `name`, a
 * member's state the ones with an instance on it, a scheduler claim or a
 * zone's leader changing (looked at every tick) the ones in its zone, and
 * a window opening or closing (every tick) that one. The endpoint list
 * (every live agent's API) is kept per node; when it changes, every view
 * carries the new one.
 */
export class Deployments extends TypedEventEmitter<DeploymentsEvents> implements Startable {
  readonly #c: DeploymentsComponents
  readonly #db
  readonly #owners = new Map<string, DeploymentOwner>()
  readonly #refreshMs: number
  readonly #tickMs: number
  readonly #specs = new Map<string, DeploymentSpec>()
  /** instance name → the nodes with an entry for it */
  readonly #hosts = new Map<string, Set<string>>()
  /** node → its agent's API, for live agents that have one */
  readonly #apis = new Map<string, string>()
  readonly #views = new Map<string, { view: DeploymentView, json: string }>()
  readonly #dirty = new Set<string>()
  readonly #dirtyNodes = new Set<string>()
  /** per zone, who it follows as of the last look */
  readonly #authority = new Map<string, string>()
  #built = false
  #list: DeploymentView[] | undefined
  #timer?: NodeJS.Timeout
  #lastTick = 0
  #off: Array<() => void> = []

  constructor (components: DeploymentsComponents, init: DeploymentsInit = {}) {
    super()
    this.#c = components
    this.#db = components.db.sublevel<string, DeploymentOwner>('deployments', { valueEncoding: 'json' })
    this.#refreshMs = init.refreshMs ?? 250
    this.#tickMs = init.tickMs ?? 1000
  }

  async start (): Promise<void> {
    for await (const [id, owner] of this.#db.iterator()) this.#owners.set(id, owner)
    const on = (prefix: string, fn: (rest: string, change: RegistryChange) => void): void => {
      this.#off.push(this.#c.registry.onChange(prefix, change => { fn(change.key.slice(prefix.length), change) }))
    }
    on('deployment/', id => { this.#readSpec(id) })
    on('placement/', rest => { this.#dirty.add(rest.split('/', 1)[0]!) })
    on('instance/', (rest, change) => {
      const [node, name] = rest.split('/', 2)
      if (node == null || name == null) return
      let hosts = this.#hosts.get(name)
      if (change.entry.value == null) {
        hosts?.delete(node)
        if (hosts?.size === 0) this.#hosts.delete(name)
      } else {
        if (hosts == null) this.#hosts.set(name, hosts = new Set())
        hosts.add(node)
      }
      for (const [id, spec] of this.#specs) if (instanceName(spec) === name) this.#dirty.add(id)
    })
    on('node/', peerId => { this.#dirtyNodes.add(peerId) })
    on('scheduler/', zone => { this.#markZone(zone.split('/', 1)[0]!) })
    const onState = (evt: Event): void => {
      const peerId = (evt as CustomEvent<{ peerId?: unknown }>).detail?.peerId
      if (typeof peerId === 'string') this.#dirtyNodes.add(peerId)
    }
    this.#c.membership?.addEventListener('member:state', onState)
    this.#off.push(() => this.#c.membership?.removeEventListener('member:state', onState))
    this.refresh()
    this.#timer = setInterval(() => {
      try {
        if (Date.now() - this.#lastTick >= this.#tickMs) this.#tick()
        if (this.#dirty.size > 0 || this.#dirtyNodes.size > 0) this.refresh()
      } catch (err) {
        // keep the last good views: nothing in the registry may stop the coordinator
        this.#c.logger.error({ err }, 'recomputing deployments failed')
      }
    }, this.#refreshMs)
    this.#timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    for (const off of this.#off) off()
    this.#off = []
  }

  /** The views, sorted by id; changes that arrived since the last refresh are applied first. */
  list (): DeploymentView[] {
    if (!this.#built || this.#dirty.size > 0 || this.#dirtyNodes.size > 0) this.refresh()
    this.#list ??= [...this.#views.values()].map(v => v.view).sort((a, b) => a.id.localeCompare(b.id))
    return this.#list
  }

  get (id: string): DeploymentView {
    if (!this.#built || this.#dirty.has(id) || this.#dirtyNodes.size > 0) this.refresh()
    const found = this.#views.get(id)?.view
    if (found == null) throw new NotFoundError(`no deployment ${id}`)
    return found
  }

  /**
   * Recompute what changed since the last call (everything the first
   * time); tells listeners, with every view, when any view changed.
   */
  refresh (): void {
    if (!this.#built) {
      this.#built = true
      for (const [id, { spec }] of readDeployments(this.#c.registry, PARSE)) this.#specs.set(id, spec)
      for (const e of this.#c.registry.list('instance/')) {
        const [, node, name] = e.key.split('/')
        if (node == null || name == null) continue
        let hosts = this.#hosts.get(name)
        if (hosts == null) this.#hosts.set(name, hosts = new Set())
        hosts.add(node)
      }
      for (const m of this.#c.members()) this.#dirtyNodes.add(m.peerId)
      for (const id of this.#specs.keys()) this.#dirty.add(id)
      for (const spec of this.#specs.values()) this.#authority.set(zoneOf(spec.placement.labels), this.#authorityOf(zoneOf(spec.placement.labels)))
    }
    const nodes = [...this.#dirtyNodes]
    this.#dirtyNodes.clear()
    let endpointsChanged = false
    for (const peerId of nodes) {
      if (this.#updateApi(peerId)) endpointsChanged = true
      // a node's liveness shows in every instance on it
      for (const [id, { view }] of this.#views) if (view.instances.some(i => i.node === peerId)) this.#dirty.add(id)
    }
    if (endpointsChanged) for (const id of this.#specs.keys()) this.#dirty.add(id)
    const ids = [...this.#dirty]
    this.#dirty.clear()
    let changed = false
    const now = Date.now()
    for (const id of ids) {
      const before = this.#views.get(id)
      const spec = this.#specs.get(id)
      let after: { view: DeploymentView, json: string } | undefined
      if (spec != null) {
        try {
          after = this.#view(id, spec, now)
        } catch (err) {
          this.#c.logger.error({ err, deployment: id }, 'a deployment\'s status failed; its last good one is kept')
          continue
        }
      }
      if (after == null) {
        if (before == null) continue
        this.#views.delete(id)
      } else if (before?.json !== after.json) {
        this.#views.set(id, after)
      } else {
        continue
      }
      changed = true
    }
    if (changed) {
      this.#list = undefined
      this.safeDispatchEvent('change', { detail: this.list() })
    }
  }

  /**
   * Validate, sign and write a new deployment. 409 when the id is taken;
   * 400 naming the field for a bad spec or a model the mesh does not have.
   */
  async create (input: Record<string, unknown>, owner: string): Promise<DeploymentView> {
    let spec: DeploymentSpec
    try {
      spec = parseDeploymentSpec(input, PARSE)
    } catch (err) {
      asBodyError(err)
    }
    if (this.#c.registry.value(deploymentKey(spec.id)) != null) throw new ConflictError(`deployment ${spec.id} exists; delete it first or choose another id`, { field: 'body.id' })
    this.#checkModel(spec)
    // the signature covers exactly the entry written: the spec with defaults filled in, by the embedded agent, at this stamp
    const auth = await this.#authorize(deploymentKey(spec.id), JSON.stringify(spec))
    const record: DeploymentOwner = { owner, createdAt: Date.now() }
    await this.#c.registry.set(deploymentKey(spec.id), spec, { auth })
    await this.#db.put(spec.id, record)
    this.#owners.set(spec.id, record)
    this.#c.logger.info({ deployment: spec.id, model: spec.model, replicas: spec.replicas, owner }, 'deployment signed and written')
    this.#readSpec(spec.id)
    this.refresh()
    return this.get(spec.id)
  }

  /** Write a signed tombstone: every agent stops the deployment's instances. */
  async delete (id: string, by: string): Promise<void> {
    if (this.#c.registry.value(deploymentKey(id)) == null) throw new NotFoundError(`no deployment ${id}`)
    const auth = await this.#authorize(deploymentKey(id), null)
    await this.#c.registry.delete(deploymentKey(id), { auth })
    await this.#db.del(id)
    this.#owners.delete(id)
    this.#c.logger.info({ deployment: id, by }, 'deployment deleted')
    this.#readSpec(id)
    this.refresh()
  }

  async #authorize (key: string, valueJson: string | null): Promise<string> {
    const { writer, ts } = this.#c.registry.stampFor(key)
    return await authorizeRegistryWrite({ key, valueJson, writer, ts }, this.#c.signer)
  }

  #checkModel (spec: DeploymentSpec): void {
    const m = spec.model
    if (resolveBundle(this.#c.registry, m) != null && m.digest == null) return
    if (m.digest != null) {
      const advertised = this.#c.registry.list<{ complete?: boolean }>(`bundle/${m.digest}/`).some(e => e.value?.complete === true)
      if (!advertised) throw new BadRequestError(`body.model.digest: no node of the mesh holds bundle ${m.digest}`, { field: 'body.model.digest' })
      return
    }
    if (m.version != null && this.#c.hasModel?.(m.name, m.version) === true) return
    throw new BadRequestError(`body.model: there is no model ${m.name} version ${m.version ?? '?'} in the repository or the mesh`, { field: 'body.model' })
  }

  /** Parse `deployment/<id>` again: a bad or deleted spec removes its view. */
  #readSpec (id: string): void {
    this.#dirty.add(id)
    this.#specs.delete(id)
    const value = this.#c.registry.value(deploymentKey(id))
    if (value == null) return
    try {
      const spec = parseDeploymentSpec(value, PARSE)
      if (spec.id === id) this.#specs.set(id, spec)
    } catch {
      // as every agent does: a spec that does not parse is not a deployment
    }
  }

  /** Who a zone follows, as text to compare. */
  #authorityOf (zone: string): string {
    const leader = this.#c.placements.leaderOf(zone)
    return JSON.stringify([leader?.peerId, leader?.term, this.#c.placements.followed(zone).map(l => [l.peerId, l.term])])
  }

  #markZone (zone: string): void {
    for (const [id, spec] of this.#specs) if (zoneOf(spec.placement.labels) === zone) this.#dirty.add(id)
  }

  /** Windows that opened or closed, and zones whose leader changed without a write we saw. */
  #tick (): void {
    this.#lastTick = Date.now()
    for (const { view } of this.#views.values()) {
      if (view.window.nextChange != null && Date.parse(view.window.nextChange) <= this.#lastTick) this.#dirty.add(view.id)
    }
    const zones = new Set([...this.#specs.values()].map(s => zoneOf(s.placement.labels)))
    for (const zone of zones) {
      const now = this.#authorityOf(zone)
      if (this.#authority.get(zone) === now) continue
      this.#authority.set(zone, now)
      this.#markZone(zone)
    }
  }

  /** Whether the node's endpoint changed. */
  #updateApi (peerId: string): boolean {
    const m = this.#c.member(peerId)
    let api: string | undefined
    if (m != null && m.state === 'alive' && m.role !== 'coordinator') {
      const value = this.#c.registry.value<Partial<NodeRecord> & { api?: unknown }>(`node/${peerId}`)?.api
      if (typeof value === 'string' && value !== '' && value.length <= MAX_API_CHARS) api = value
    }
    if (api === this.#apis.get(peerId)) return false
    if (api == null) this.#apis.delete(peerId)
    else this.#apis.set(peerId, api)
    return true
  }

  #view (id: string, spec: DeploymentSpec, now: number): { view: DeploymentView, json: string } {
    const status = deploymentStatus(this.#c.registry, this.#c.placements, id, spec, this.#hosts.get(instanceName(spec)) ?? [], now, peer => this.#c.member(peer)?.state ?? 'unknown')
    const model = typeof spec.instance.name === 'string' ? spec.instance.name : spec.model.name
    const owner = this.#owners.get(id)
    const view: DeploymentView = {
      ...status,
      model,
      replicas: status.placement?.replicas ?? spec.replicas,
      createdBy: owner?.owner ?? null,
      createdAt: owner?.createdAt ?? null,
      endpoints: [...this.#apis].sort((a, b) => a[0].localeCompare(b[0])).map(([node, api]) => ({ node, url: `${api}/v1/models/${model}:predict` }))
    }
    return { view, json: JSON.stringify(view) }
  }
}
