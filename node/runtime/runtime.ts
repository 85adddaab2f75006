import { familyOf, probeBackends, type BackendName, type BackendPreference, type OnnxBackendPreference, type RuntimeFamily } from './backend.ts'
import { InstanceChangedError, InstanceExistsError, InstanceSpecError, ModelNotFoundError } from './errors.ts'
import { ModelInstance, scratchDirFor, type InstanceComponents } from './instance.ts'
import { mergeSpecs, parseInstanceSpec } from './spec.ts'
import { resolveOnnxBackend } from '../../packaging/models/onnx-probe.ts'
import { diskGuardOf, type Database } from '../store/db.ts'
import type { UnpackedBundles } from './bundle-store.ts'
import type { Registry } from '../registry/registry.ts'
import type { RuntimeMetrics } from '../metrics/runtime-metrics.ts'
import type { Startable } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'

/** What `gatemesh run` asks for; kept in level so the instance comes back after a restart. */
export interface RunRequest {
  /** digest of a bundle this node holds (uploaded or pulled into the bundle store) */
  bundle: string
  /** overrides of the bundle's config.json: name, input (e.g. sensors), batch, workers, rules */
  spec?: Record<string, unknown>
  /** the deployment this instance belongs to, when a placement started it */
  deployment?: string
}

export interface RuntimeComponents extends Omit<InstanceComponents, 'logger'> {
  fleetKey: KeyObject
  bundles: Pick<UnpackedBundles, 'load'>
  db: Database
  registry: Pick<Registry, 'set'>
  logger: InstanceComponents['logger']
  metrics?: RuntimeMetrics
  /** told whenever the backend in use changes, to re-announce `node/<self>` */
  onBackend?: (backend: BackendName) => void
  /** told when an instance with action scripts starts, so their sandbox is ready before the first event */
  onScriptInstance?: () => void
}

export interface RuntimeInit {
  dataDir: string
  /** @default 1 */
  workers?: number
  /** @default 8 */
  maxBatchSize?: number
  /** @default 0 */
  maxBatchDelayMs?: number
  /** TensorFlow.js backend. @default 'auto' */
  backend?: BackendPreference
  /** ONNX Runtime backend. @default 'auto' */
  onnxBackend?: OnnxBackendPreference
  /** how long a predict waits for a loading model before a 503. @default DEFAULT_LOAD_WAIT_MS */
  loadWaitMs?: number
  /** A replaced instance gets this long to finish the predicts it took before it stops. @default 10_000 */
  drainMs?: number
  /** Running instances' predict counts are re-announced at most this often when they change. @default 2000 */
  statsIntervalMs?: number
}

/** The backend of one runtime family: the one in use, or the one that would be used. */
export interface BackendState { backend: BackendName, inUse: boolean }

/**
 * The node's model instances: starts them from verified bundles, answers
 * for them by name, records each in `instance/<self>/<name>`, and restarts
 * the ones that were running when the agent stopped.
 */
export class Runtime implements Startable {
  readonly #c: RuntimeComponents
  readonly #init: RuntimeInit
  readonly #instances = new Map<string, ModelInstance>()
  readonly #runs
  readonly #disk
  #backend: BackendName
  #backendInUse = false
  readonly #backends: Record<RuntimeFamily, BackendState>
  #restoring: Promise<void> = Promise.resolve()
  /** what `instance/<self>/<name>` says, as this node last wrote it */
  readonly #entries = new Map<string, Record<string, any>>()
  #statsTimer?: NodeJS.Timeout

  constructor (components: RuntimeComponents, init: RuntimeInit) {
    this.#c = components
    this.#init = init
    this.#runs = components.db.sublevel<string, RunRequest>('instances', { valueEncoding: 'json' })
    this.#disk = diskGuardOf(components.db)
    const probed = probeBackends(init.backend ?? 'auto', init.onnxBackend ?? 'auto')
    this.#backends = { tfjs: { backend: probed.tfjs, inUse: false }, onnx: { backend: probed.onnx, inUse: false }, tflite: { backend: probed.tflite, inUse: false } }
    this.#backend = probed.tfjs
    for (const [family, state] of Object.entries(this.#backends)) components.metrics?.setBackend(family, state.backend, false)
  }

  /** Per runtime family (tfjs, onnx, tflite): the backend its instances run on, or would. */
  backends (): Record<RuntimeFamily, BackendState> {
    return structuredClone(this.#backends)
  }

  /** The backend the latest instance started on (TensorFlow.js's, before any starts): what `node/<self>` advertises. */
  get backend (): BackendName {
    return this.#backend
  }

  get backendInUse (): boolean {
    return this.#backendInUse
  }

  /**
   * Restore the instances that were running, in the background: loading
   * models takes seconds, and the agent's API and mesh should not wait.
   */
  async start (): Promise<void> {
    this.#restoring = this.#restore()
    this.#statsTimer = setInterval(() => { void this.#publishPredicts() }, this.#init.statsIntervalMs ?? 2000)
    this.#statsTimer.unref()
  }

  /** Resolves once every instance recorded before the restart was restarted (or failed to). */
  async restored (): Promise<void> {
    await this.#restoring
  }

  async #restore (): Promise<void> {
    const runs = await this.#runs.iterator().all()
    for (const [name, request] of runs) {
      try {
        await this.run(request, { persist: false })
        this.#c.logger.info({ model: name }, 'instance restored')
      } catch (err: any) {
        this.#c.logger.error({ model: name, code: err.code, err: err.message }, 'instance could not be restored')
        await this.#announce(name, { state: 'failed', reason: err.message })
      }
    }
  }

  async stop (): Promise<void> {
    clearInterval(this.#statsTimer)
    await this.#restoring
    // records stay in level: these instances come back with the agent
    await Promise.allSettled([...this.#instances.values()].map(async i => { await i.stop() }))
    this.#instances.clear()
    this.#c.metrics?.instances.set(0)
  }

  get (name: string): ModelInstance {
    const instance = this.#instances.get(name)
    if (instance == null) throw new ModelNotFoundError(`no instance of model ${name} runs on this node`)
    return instance
  }

  has (name: string): boolean {
    return this.#instances.has(name)
  }

  list (): ModelInstance[] {
    return [...this.#instances.values()]
  }

  /** Verify the bundle, start an instance of it and remember it. */
  async run (request: RunRequest, options: { persist?: boolean } = {}): Promise<ModelInstance> {
    // refused up front rather than started and then not recorded (it would not come back after a restart)
    if (options.persist !== false) this.#disk?.check('instances started through the API')
    const { instance, owner } = await this.#prepare(request)
    const { name, bundle } = instance
    if (this.#instances.has(name)) throw new InstanceExistsError(`model ${name} already runs on this node; stop it first`)
    this.#instances.set(name, instance)
    await this.#announce(name, { ...owner, state: 'starting', model: bundle.manifest.name, version: bundle.manifest.version, bundle: request.bundle })
    try {
      await instance.start()
    } catch (err: any) {
      this.#instances.delete(name)
      await this.#announce(name, { ...owner, state: 'failed', model: bundle.manifest.name, version: bundle.manifest.version, bundle: request.bundle, reason: err.message, at: Date.now() })
      throw err
    }
    if (options.persist !== false) await this.#runs.put(name, { bundle: request.bundle, ...(request.spec == null ? {} : { spec: request.spec }) })
    this.#started(instance, request)
    await this.#announceRunning(instance, request, owner)
    return instance
  }

  /**
   * Replace the running instance of the same name with one of `request`
   * (a model update): the new instance starts beside the old one, takes
   * predicts only once it is AVAILABLE, and the old one finishes what it
   * took and stops after. When the new one fails, the old one keeps
   * running and `instance/<self>/<name>` says so under `next`.
   */
  async replace (name: string, request: RunRequest, options: { before?: () => Promise<void> } = {}): Promise<ModelInstance> {
    const old = this.#instances.get(name)
    if (old == null) {
      await options.before?.()
      return await this.run(request, { persist: false })
    }
    let next: Record<string, unknown> = { bundle: request.bundle }
    // the running instance's entry, as last announced (its predict counts move meanwhile), with where its successor is
    const withNext = (state: Record<string, unknown>): Record<string, unknown> => ({ ...this.#entries.get(name), next: { ...next, ...state } })
    let instance: ModelInstance | undefined
    let owner: { deployment?: string } = {}
    try {
      await this.#announce(name, withNext({ state: 'pulling' }))
      await options.before?.()
      ;({ instance, owner } = await this.#prepare(request))
      if (instance.name !== name) throw new InstanceSpecError(`spec.name: the replacement of ${name} is named ${instance.name}`, 'spec.name')
      next = { ...next, version: instance.bundle.manifest.version }
      await this.#announce(name, withNext({ state: 'starting' }))
      await instance.start()
    } catch (err: any) {
      await this.#announce(name, withNext({ state: 'failed', reason: err.message, at: Date.now() }))
      throw err
    }
    if (this.#instances.get(name) !== old) {
      // stopped or replaced meanwhile: this one is not wanted any more
      await instance.stop()
      throw new InstanceChangedError(`model ${name} was stopped or replaced on this node while its replacement started`)
    }
    this.#instances.set(name, instance)
    this.#started(instance, request)
    await this.#announceRunning(instance, request, owner)
    this.#c.logger.info({ model: name, from: old.version, to: instance.version }, 'instance replaced')
    await old.drained(this.#init.drainMs ?? 10_000)
    await old.stop()
    return instance
  }

  /** Load and check the bundle and make an instance of it (not started). */
  async #prepare (request: RunRequest): Promise<{ instance: ModelInstance, owner: { deployment?: string } }> {
    const bundle = await this.#c.bundles.load(request.bundle)
    // what the action script may reach is the publisher's to declare, signed with the bundle
    if (request.spec?.script !== undefined) throw new InstanceSpecError('spec.script: comes from the bundle\'s config.json only', 'spec.script')
    const spec = parseInstanceSpec(mergeSpecs(bundle.config, request.spec ?? {}))
    const name = spec.name ?? bundle.manifest.name
    const scripted = spec.rules.some(r => r.actions.some(a => a.type === 'script'))
    if (scripted && bundle.actionPath == null) {
      throw new InstanceSpecError('spec.rules: a script action needs a bundle with an action script (manifest.action)', 'spec.rules')
    }
    if (scripted) this.#c.onScriptInstance?.()
    // the native ONNX binding is tried in a child first: one that crashes (an emulator) must not take the agent down
    const onnxBackend = bundle.manifest.model.format === 'onnx' ? await resolveOnnxBackend(this.#init.onnxBackend ?? 'auto') : 'auto'
    const instance = new ModelInstance(this.#c, {
      bundle,
      spec,
      scratchDir: scratchDirFor(this.#init.dataDir, name),
      workers: this.#init.workers ?? 1,
      maxBatchSize: this.#init.maxBatchSize ?? 8,
      maxBatchDelayMs: this.#init.maxBatchDelayMs ?? 0,
      backend: this.#init.backend ?? 'auto',
      onnxBackend,
      ...(this.#init.loadWaitMs == null ? {} : { loadWaitMs: this.#init.loadWaitMs })
    })
    return { instance, owner: request.deployment == null ? {} : { deployment: request.deployment } }
  }

  /** Bookkeeping of an instance that just became AVAILABLE: metrics and the backend it runs on. */
  #started (instance: ModelInstance, request: RunRequest): void {
    this.#c.metrics?.instances.set(this.#instances.size)
    const backend = instance.backend as BackendName | undefined
    if (backend == null) return
    const family = familyOf(instance.bundle.manifest.model.format)
    this.#backends[family] = { backend, inUse: true }
    this.#c.metrics?.setBackend(family, backend, true)
    if (backend !== this.#backend || !this.#backendInUse) {
      this.#backend = backend
      this.#backendInUse = true
      this.#c.onBackend?.(backend)
    }
    this.#c.logger.info({ model: instance.name, version: instance.version, bundle: request.bundle, backend: instance.backend, sensors: instance.spec.input?.sensors ?? [], rules: instance.spec.rules.length }, 'instance running')
  }

  async #announceRunning (instance: ModelInstance, request: RunRequest, owner: { deployment?: string }): Promise<void> {
    const { manifest } = instance.bundle
    await this.#announce(instance.name, { ...owner, state: 'running', model: manifest.name, version: manifest.version, bundle: request.bundle, backend: instance.backend, startedAt: instance.startedAt, predicts: instance.predicts })
  }

  /**
   * Re-announce running instances whose predict counts changed, at most
   * every `statsIntervalMs`: the scheduler judges a model update's error
   * rate from them.
   */
  async #publishPredicts (): Promise<void> {
    for (const [name, instance] of this.#instances) {
      const entry = this.#entries.get(name)
      if (entry?.state !== 'running' || entry.bundle == null) continue
      const now = instance.predicts
      const was = entry.predicts as { ok: number, errors: number } | undefined
      if (was?.ok === now.ok && was.errors === now.errors) continue
      await this.#announce(name, { ...entry, predicts: now })
    }
  }

  /** Stop an instance and forget it (it will not come back after a restart). */
  async stopInstance (name: string): Promise<void> {
    const instance = this.get(name)
    this.#instances.delete(name)
    // stopped before its record is forgotten: a write refused (a full disk) must not leave it running
    // out of sight, its sensor pipeline firing rules beside the instance started in its place
    await instance.stop()
    this.#c.metrics?.instances.set(this.#instances.size)
    await this.#announce(name, { state: 'stopped', model: instance.bundle.manifest.name, version: instance.version, stoppedAt: Date.now() })
    this.#c.logger.info({ model: name }, 'instance stopped')
    // deployment instances are never recorded: nothing to write for them
    if (await this.#runs.get(name) !== undefined) await this.#runs.del(name)
  }

  async #announce (name: string, value: Record<string, unknown>): Promise<void> {
    this.#entries.set(name, value)
    try {
      await this.#c.registry.set(`instance/${this.#c.node}/${name}`, value)
    } catch (err: any) {
      this.#c.logger.warn({ model: name, err: err.message }, 'could not record the instance state in the registry')
    }
  }
}
