import { TypedEventEmitter } from '@libp2p/interface'
import { validateInstanceOverrides } from '../../node/scheduler/instance-check.ts'
import { deploymentKey } from '../../node/scheduler/keys.ts'
import { resolveBundle } from '../../node/scheduler/resolve.ts'
import { parseDeploymentSpec, type DeploymentSpec, type ParseOptions } from '../../node/scheduler/spec.ts'
import { deploymentStatuses, type DeploymentStatus } from '../../node/scheduler/status.ts'
import { authorizeRegistryWrite, type Signer } from '../../packaging/trust.ts'
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts'
import type { Member, NodeRecord } from '../../node/membership/membership.ts'
import type { Registry } from '../../node/registry/registry.ts'
import type { Database } from '../../node/store/db.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface DeploymentsComponents {
  registry: Pick<Registry, 'get' | 'list' | 'value' | 'set' | 'delete' | 'onChange' | 'stampFor'>
  members(): Member[]
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
  /** Recompute at least this often even without changes (windows open and close with time). @default 1000 */
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
 * whether or not the coordinator stays up. Statuses are recomputed from
 * the registry when it changes and on a tick (windows open and close).
 */
export class Deployments extends TypedEventEmitter<DeploymentsEvents> implements Startable {
  readonly #c: DeploymentsComponents
  readonly #db
  readonly #owners = new Map<string, DeploymentOwner>()
  readonly #refreshMs: number
  readonly #tickMs: number
  #views: DeploymentView[] = []
  #json = '[]'
  #dirty = true
  #lastRefresh = 0
  #timer?: NodeJS.Timeout
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
    const dirty = (): void => { this.#dirty = true }
    for (const prefix of ['deployment/', 'placement/', 'instance/', 'node/']) this.#off.push(this.#c.registry.onChange(prefix, dirty))
    this.#c.membership?.addEventListener('member:state', dirty)
    this.#off.push(() => this.#c.membership?.removeEventListener('member:state', dirty))
    this.refresh()
    this.#timer = setInterval(() => {
      if (!this.#dirty && Date.now() - this.#lastRefresh < this.#tickMs) return
      try {
        this.refresh()
      } catch (err) {
        // keep the last good list: nothing in the registry may stop the coordinator
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

  /** The cached views, recomputed first when the registry changed since the last refresh. */
  list (): DeploymentView[] {
    if (this.#dirty) this.refresh()
    return this.#views
  }

  get (id: string): DeploymentView {
    const found = this.#compute().find(d => d.id === id)
    if (found == null) throw new NotFoundError(`no deployment ${id}`)
    return found
  }

  /** Recompute now; tells listeners when anything changed. */
  refresh (): void {
    this.#dirty = false
    this.#lastRefresh = Date.now()
    const views = this.#compute()
    const json = JSON.stringify(views)
    this.#views = views
    if (json !== this.#json) {
      this.#json = json
      this.safeDispatchEvent('change', { detail: views })
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

  #compute (): DeploymentView[] {
    const members = this.#c.members()
    const states = new Map(members.map(m => [m.peerId, m.state]))
    const statuses = deploymentStatuses(this.#c.registry, PARSE, Date.now(), peer => states.get(peer) ?? 'unknown')
    const apis = members
      .filter(m => m.state === 'alive' && m.role !== 'coordinator')
      .flatMap(m => {
        const api = this.#c.registry.value<Partial<NodeRecord> & { api?: unknown }>(`node/${m.peerId}`)?.api
        return typeof api === 'string' && api !== '' ? [{ node: m.peerId, api }] : []
      })
    return statuses.map(s => {
      const model = typeof s.spec.instance.name === 'string' ? s.spec.instance.name : s.spec.model.name
      const owner = this.#owners.get(s.id)
      return {
        ...s,
        model,
        replicas: s.placement?.replicas ?? s.spec.replicas,
        createdBy: owner?.owner ?? null,
        createdAt: owner?.createdAt ?? null,
        endpoints: apis.map(a => ({ node: a.node, url: `${a.api}/v1/models/${model}:predict` }))
      }
    }).sort((a, b) => a.id.localeCompare(b.id))
  }
}
