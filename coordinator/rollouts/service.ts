import { stat } from 'node:fs/promises'
import { readReleaseManifest } from '../../packaging/release/verify.ts'
import { authorizeRegistryWrite, type Signer } from '../../packaging/trust.ts'
import { admitRollout } from '../../node/release/admit.ts'
import { newRolloutSpec, parseRolloutSpec, rolloutKey, type NewRolloutInit, type RolloutSpec, type RolloutState } from '../../node/release/rollout.ts'
import { BadRequestError, NotFoundError } from '../errors.ts'
import { MeshReleases, type MeshRelease } from './releases.ts'
import type { ReleaseService } from '../../node/release/service.ts'
import type { RolloutStatus } from '../../node/release/waves.ts'
import type { Registry } from '../../node/registry/registry.ts'
import type { Logger } from 'pino'

export interface RolloutsComponents {
  registry: Pick<Registry, 'set' | 'list' | 'stampFor' | 'onChange'>
  /** liveness changes move targets between waiting and offline */
  membership?: Pick<EventTarget, 'addEventListener' | 'removeEventListener'>
  /** the embedded agent's view of rollouts and the fleet */
  releases: Pick<ReleaseService, 'statuses' | 'rollouts' | 'fleet'>
  /** the embedded agent's bundle store: a release is pulled (and verified) there before the coordinator names it */
  bundles: {
    pull(digest: string): unknown
    waitFor(digest: string): Promise<unknown>
    pathOf(digest: string): string
  }
  /** the fleet key: the coordinator signs every rollout it writes */
  signer: Signer
  logger: Logger
}

/** What `POST /api/v1/rollouts` takes: release bundles by digest, and how to roll them out. */
export type CreateRollout = Omit<NewRolloutInit, 'releases' | 'createdBy' | 'now'> & { releases: string[] }

/** Registry prefixes whose changes change what rollouts show: the records, each node's release record, bundle adverts. */
const WATCHED = ['rollout/', 'release/', 'bundle/']

/** How long the coordinator waits for a release it pulls before it names it. @default 120000 */
const PULL_TIMEOUT_MS = 120_000

/** `rollout.waves[1]` → `body.waves[1]`: the fields of the request that carried it. */
function asBodyError (err: any): never {
  if (typeof err?.field === 'string' && err.field.startsWith('rollout')) {
    throw new BadRequestError(String(err.message).replace(/^rollout/, 'body'), { field: 'body' + String(err.field).slice('rollout'.length), cause: err })
  }
  throw err
}

/**
 * Rollouts through the coordinator's API: it pulls each named release
 * bundle into its own agent's store (verified there, like on any node),
 * reads its version and CPU, builds the rollout record as `gatemesh
 * rollout create` does, checks it as every agent does, signs it with the
 * fleet key and writes it to the registry. The agents take it from there,
 * with or without the coordinator.
 */
export class CoordinatorRollouts extends EventTarget {
  readonly #c: RolloutsComponents
  readonly #pullTimeoutMs: number
  readonly #releases: MeshReleases
  #off: Array<() => void> = []

  constructor (components: RolloutsComponents, init: { pullTimeoutMs?: number } = {}) {
    super()
    this.#c = components
    this.#pullTimeoutMs = init.pullTimeoutMs ?? PULL_TIMEOUT_MS
    this.#releases = new MeshReleases({ registry: components.registry, pathOf: digest => components.bundles.pathOf(digest) })
  }

  /**
   * Dispatch `change` whenever what `list()` or `releases()` show may have
   * changed; listeners (the dashboard's event streams) recompute lazily, at
   * most once per batch.
   */
  start (): void {
    if (this.#off.length > 0) return
    const changed = (): void => { this.dispatchEvent(new Event('change')) }
    for (const prefix of WATCHED) this.#off.push(this.#c.registry.onChange(prefix, changed))
    this.#c.membership?.addEventListener('member:state', changed)
    this.#off.push(() => this.#c.membership?.removeEventListener('member:state', changed))
  }

  stop (): void {
    for (const off of this.#off) off()
    this.#off = []
  }

  /** Release bundles the mesh holds, newest version first: what a rollout can name. */
  async releases (): Promise<MeshRelease[]> {
    return await this.#releases.list()
  }

  list (): RolloutStatus[] {
    return this.#c.releases.statuses()
  }

  get (id: string): RolloutStatus {
    const found = this.#c.releases.statuses().find(r => r.id === id)
    if (found == null) throw new NotFoundError(`no rollout ${id}`)
    return found
  }

  async create (body: CreateRollout, owner: string): Promise<RolloutStatus> {
    if (new Set(body.releases).size !== body.releases.length) throw new BadRequestError('body.releases: a digest is named twice', { field: 'body.releases' })
    const releases: RolloutSpec['releases'] = []
    for (const [i, digest] of body.releases.entries()) {
      releases.push(await this.#describe(digest, `body.releases[${i}]`))
    }
    let spec: RolloutSpec
    try {
      // newRolloutSpec takes the options it knows and defaults the rest (the route's schema allows no others)
      spec = newRolloutSpec({ ...body, releases, createdBy: owner.slice(0, 128) })
      if (this.#c.releases.rollouts().some(r => r.id === spec.id)) throw new BadRequestError(`body.id: rollout ${spec.id} exists; pick another id`, { field: 'body.id' })
      // the coordinator's own agent holds every release now, so `held` is true for them
      admitRollout(spec, undefined, { held: () => true, fleet: () => this.#c.releases.fleet() })
    } catch (err) {
      asBodyError(err)
    }
    await this.#write(spec)
    this.#c.logger.info({ rollout: spec.id, version: releases[0]!.version, owner }, 'rollout created')
    return this.get(spec.id)
  }

  /** Pause, resume or abort, or change the failure budget: the record rewritten and signed again. */
  async change (id: string, change: { state?: RolloutState, maxFailures?: number }, owner: string): Promise<RolloutStatus> {
    const existing = this.#c.releases.rollouts().find(r => r.id === id)
    if (existing == null) throw new NotFoundError(`no rollout ${id}`)
    const next = parseRolloutSpec({ ...existing, ...change })
    if (JSON.stringify(next) === JSON.stringify(existing)) return this.get(id)
    try {
      admitRollout(next, existing, { held: () => true, fleet: () => this.#c.releases.fleet() })
    } catch (err) {
      asBodyError(err)
    }
    await this.#write(next)
    this.#c.logger.info({ rollout: id, ...change, owner }, 'rollout changed')
    return this.get(id)
  }

  async #describe (digest: string, field: string): Promise<RolloutSpec['releases'][number]> {
    let timer: NodeJS.Timeout | undefined
    try {
      this.#c.bundles.pull(digest)
      await Promise.race([
        this.#c.bundles.waitFor(digest),
        new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`not complete after ${this.#pullTimeoutMs / 1000}s`)) }, this.#pullTimeoutMs) })
      ])
    } catch (err: any) {
      throw new BadRequestError(`${field}: release bundle ${digest} could not be pulled and verified here: ${String(err.message).slice(0, 300)}`, { field, cause: err })
    } finally {
      clearTimeout(timer)
    }
    const manifest = await readReleaseManifest(this.#c.bundles.pathOf(digest)).catch((err: any) => {
      throw new BadRequestError(`${field}: bundle ${digest} is not an agent release: ${String(err.message).slice(0, 300)}`, { field, cause: err })
    })
    return { arch: manifest.arch, version: manifest.version, digest, size: (await stat(this.#c.bundles.pathOf(digest))).size }
  }

  async #write (spec: RolloutSpec): Promise<void> {
    const key = rolloutKey(spec.id)
    // the authorisation binds the entry the embedded agent writes: key, value, writer and timestamp
    const { writer, ts } = this.#c.registry.stampFor(key)
    const auth = await authorizeRegistryWrite({ key, valueJson: JSON.stringify(spec), writer, ts }, this.#c.signer)
    await this.#c.registry.set(key, spec, { auth })
  }
}
