import { familyOf, probeBackends, type BackendName, type BackendPreference, type OnnxBackendPreference, type RuntimeFamily } from './backend.ts'
import { InstanceExistsError, InstanceSpecError, ModelNotFoundError } from './errors.ts'
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
    const bundle = await this.#c.bundles.load(request.bundle)
    // what the action script may reach is the publisher's to declare, signed with the bundle
    if (request.spec?.script !== undefined) throw new InstanceSpecError('spec.script: comes from the bundle\'s config.json only', 'spec.script')
    const spec = parseInstanceSpec(mergeSpecs(bundle.config, request.spec ?? {}))
    const name = spec.name ?? bundle.manifest.name
    if (this.#instances.has(name)) throw new InstanceExistsError(`model ${name} already runs on this node; stop it first`)
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
    this.#instances.set(name, instance)
    const owner = request.deployment == null ? {} : { deployment: request.deployment }
    await this.#announce(name, { ...owner, state: 'starting', model: bundle.manifest.name, version: bundle.manifest.version, bundle: request.bundle })
    try {
      await instance.start()
    } catch (err: any) {
      this.#instances.delete(name)
      await this.#announce(name, { ...owner, state: 'failed', model: bundle.manifest.name, version: bundle.manifest.version, reason: err.message })
      throw err
    }
    if (options.persist !== false) await this.#runs.put(name, { bundle: request.bundle, ...(request.spec == null ? {} : { spec: request.spec }) })
    this.#c.metrics?.instances.set(this.#instances.size)
    const backend = instance.backend as BackendName | undefined
    if (backend != null) {
      const family = familyOf(bundle.manifest.model.format)
      this.#backends[family] = { backend, inUse: true }
      this.#c.metrics?.setBackend(family, backend, true)
      if (backend !== this.#backend || !this.#backendInUse) {
        this.#backend = backend
        this.#backendInUse = true
        this.#c.onBackend?.(backend)
      }
    }
    await this.#announce(name, { ...owner, state: 'running', model: bundle.manifest.name, version: bundle.manifest.version, bundle: request.bundle, backend: instance.backend, startedAt: instance.startedAt })
    this.#c.logger.info({ model: name, version: instance.version, backend: instance.backend, sensors: spec.input?.sensors ?? [], rules: spec.rules.length }, 'instance running')
    return instance
  }

  /** Stop an instance and forget it (it will not come back after a restart). */
  async stopInstance (name: string): Promise<void> {
    const instance = this.get(name)
    this.#instances.delete(name)
    await this.#runs.del(name)
    await instance.stop()
    this.#c.metrics?.instances.set(this.#instances.size)
    await this.#announce(name, { state: 'stopped', model: instance.bundle.manifest.name, version: instance.version, stoppedAt: Date.now() })
    this.#c.logger.info({ model: name }, 'instance stopped')
  }

  async #announce (name: string, value: Record<string, unknown>): Promise<void> {
    try {
      await this.#c.registry.set(`instance/${this.#c.node}/${name}`, value)
    } catch (err: any) {
      this.#c.logger.warn({ model: name, err: err.message }, 'could not record the instance state in the registry')
    }
  }
}
