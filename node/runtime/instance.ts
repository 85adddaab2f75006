import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import merge from 'it-merge'
import { pipe } from 'it-pipe'
import { render } from '../actions/template.ts'
import { Batcher } from './batcher.ts'
import { InstanceSpecError, InstanceStoppedError, ModelLoadError, ModelLoadingError } from './errors.ts'
import { interpret } from './interpret.ts'
import { WorkerPool } from './pool.ts'
import { Rule } from './rules.ts'
import { checkInstance, rowOf, shapeKey, toBatch, type CheckedInstance, type Nested } from './tensors.ts'
import { SensorWindow } from './window.ts'
import type { ActionSpec } from '../actions/schema.ts'
import type { RuntimeMetrics } from '../metrics/runtime-metrics.ts'
import { actionKey } from '../outbox/dedupe.ts'
import type { EnqueueInput } from '../outbox/outbox.ts'
import type { AbstractSensor, Reading } from '../../sensors/index.ts'
import { reconcileSpecs } from '../../packaging/models/specs.ts'
import type { OnnxBackendPreference, TfjsBackendPreference } from '../../packaging/models/runner.ts'
import type { LoadedBundle } from './bundle-dir.ts'
import type { InstanceSpec, RuleSpec } from './spec.ts'
import type { Logger } from 'pino'

export type InstanceState = 'starting' | 'running' | 'stopping' | 'stopped' | 'failed'

export interface InstanceComponents {
  node: string
  sensors: Map<string, AbstractSensor>
  outbox: { enqueue(input: EnqueueInput): Promise<unknown> }
  logger: Logger
  metrics?: RuntimeMetrics
}

export interface InstanceInit {
  bundle: LoadedBundle
  spec: InstanceSpec
  /** the instance's scratch dir (its action script may write there) */
  scratchDir: string
  workers: number
  maxBatchSize: number
  maxBatchDelayMs: number
  /** TensorFlow.js backend wanted */
  backend: TfjsBackendPreference
  /** ONNX Runtime backend wanted. @default 'auto' */
  onnxBackend?: OnnxBackendPreference
  /** how long a predict that arrives while the model loads waits for it before a 503. @default DEFAULT_LOAD_WAIT_MS */
  loadWaitMs?: number
}

/** A predict during loading waits this long for the model before it is answered 503 with Retry-After. */
export const DEFAULT_LOAD_WAIT_MS = 2000

/** A prediction with its context: what rules test and what templates and scripts see. */
export type PredictionEvent = Record<string, unknown> & { model: string, version: string, source: 'api' | 'sensor', ts: number }

/**
 * One running model: a worker pool with dynamic batching for predict
 * requests and, when the spec has an input, a pipeline from sensor readings
 * through windowing and preprocessing into the model and its rules. Rules
 * that fire queue their actions in the outbox.
 */
export class ModelInstance {
  readonly name: string
  readonly bundle: LoadedBundle
  readonly spec: InstanceSpec
  readonly #c: InstanceComponents
  readonly #init: InstanceInit
  readonly #pool: WorkerPool
  readonly #batcher: Batcher<CheckedInstance, Nested[]>
  readonly #rules: Array<{ rule: Rule, spec: RuleSpec }>
  readonly #abort = new AbortController()
  #pipeline?: Promise<void>
  #state: InstanceState = 'starting'
  #reason?: string
  readonly #started = deferred()
  readonly startedAt = Date.now()
  /** predicts answered and failed since start: what a model update's error rate is judged on */
  readonly #predicts = { ok: 0, errors: 0 }
  #inflight = 0
  #idle: Array<() => void> = []

  constructor (components: InstanceComponents, init: InstanceInit) {
    this.#c = components
    this.#init = init
    this.bundle = init.bundle
    this.spec = init.spec
    this.name = init.spec.name ?? init.bundle.manifest.name
    const { manifest } = init.bundle
    this.#rules = init.spec.rules.map((spec, i) => ({ spec, rule: new Rule(spec, `spec.rules[${i}]`) }))
    for (const id of init.spec.input?.sensors ?? []) {
      if (!components.sensors.has(id)) throw new InstanceSpecError(`spec.input.sensors: no sensor "${id}" on this node (declared: ${[...components.sensors.keys()].join(', ') || 'none'})`, 'spec.input.sensors')
    }
    const maxBatch = init.spec.batch?.maxSize ?? init.maxBatchSize
    this.#pool = new WorkerPool({
      size: init.spec.workers ?? init.workers,
      // the entry is a manifest path: relative, no `..` (checked by the manifest schema)
      path: join(init.bundle.dir, manifest.model.entry),
      format: manifest.model.format,
      tfjsBackend: init.backend,
      onnxBackend: init.onnxBackend ?? 'auto',
      maxBatch,
      logger: components.logger
    })
    // nobody may be waiting when a start fails
    this.#started.promise.catch(() => {})
    this.#batcher = new Batcher({
      maxSize: maxBatch,
      maxDelayMs: init.spec.batch?.maxDelayMs ?? init.maxBatchDelayMs,
      concurrency: init.spec.workers ?? init.workers,
      key: shapeKey,
      run: async items => await this.#runBatch(items)
    })
  }

  get state (): InstanceState {
    return this.#state
  }

  get reason (): string | undefined {
    return this.#reason
  }

  get version (): string {
    return this.bundle.manifest.version
  }

  get backend (): string | undefined {
    return this.#pool.backend
  }

  /** The model's format and the runtime it runs on. */
  get format (): string {
    return this.bundle.manifest.model.format
  }

  async start (): Promise<void> {
    try {
      await this.#pool.start()
      this.#checkDeclared()
    } catch (err: any) {
      this.#state = 'failed'
      this.#reason = err.message
      this.#started.reject(err)
      await this.#pool.stop()
      throw err
    }
    this.#state = 'running'
    this.#started.resolve()
    if ((this.spec.input?.sensors.length ?? 0) > 0) this.#pipeline = this.#runPipeline()
  }

  /** The signed manifest must describe the model the workers loaded: same inputs and outputs, dtypes and ranks. */
  #checkDeclared (): void {
    const declared = this.#pool.declared
    const { manifest } = this.bundle
    if (declared == null) return
    // TF.js models are fed by position, and their loaded names depend on what else the process loaded
    const byPosition = manifest.model.format.startsWith('tfjs-')
    try {
      for (const field of ['inputs', 'outputs'] as const) reconcileSpecs(declared[field], manifest[field], field, { byPosition })
    } catch (err: any) {
      throw new ModelLoadError(`the manifest does not describe the model it carries: manifest.${err.message}`, { cause: err })
    }
  }

  async stop (): Promise<void> {
    if (this.#state === 'stopped') return
    this.#started.reject(new InstanceStoppedError(`model ${this.name} is stopping`))
    this.#state = 'stopping'
    this.#abort.abort()
    this.#batcher.cancel(new InstanceStoppedError(`model ${this.name} is stopping`))
    await this.#pipeline
    await this.#pool.stop()
    this.#state = 'stopped'
  }

  /** Predicts this instance answered (`ok`) and failed (`errors`) since it started. */
  get predicts (): { ok: number, errors: number } {
    return { ...this.#predicts }
  }

  /** Resolves once no predict is in flight (or after `timeoutMs`): a replaced instance finishes what it took before it stops. */
  async drained (timeoutMs: number): Promise<void> {
    if (this.#inflight === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      new Promise<void>(resolve => { this.#idle.push(resolve) }),
      new Promise<void>(resolve => { timer = setTimeout(resolve, timeoutMs) })
    ])
    clearTimeout(timer)
  }

  /** Predict checked instances; rules run on each prediction. Rows come back per instance, per output. */
  async predict (instances: CheckedInstance[], source: 'api' | 'sensor' = 'api', context: Record<string, unknown> = {}): Promise<Nested[][]> {
    if (this.#state === 'starting') await this.loaded()
    if (this.#state !== 'running') throw new InstanceStoppedError(`model ${this.name} is ${this.#state}`)
    const ts = typeof context.ts === 'number' ? context.ts : Date.now()
    let rows: Nested[][]
    this.#inflight++
    try {
      rows = await Promise.all(instances.map(async i => await this.#batcher.submit(i)))
      this.#predicts.ok++
    } catch (err) {
      this.#predicts.errors++
      throw err
    } finally {
      if (--this.#inflight === 0) for (const wake of this.#idle.splice(0)) wake()
    }
    this.#c.metrics?.predictions.inc({ model: this.name, source }, rows.length)
    if (this.#rules.length > 0) {
      // the id the request entered with (the same on every replica the router tried), else one of its own
      const requestId = typeof context.requestId === 'string' ? context.requestId : randomUUID()
      for (const [row, r] of rows.entries()) await this.#applyRules({ ...context, ...interpret(r, this.bundle.manifest.outputs), model: this.name, version: this.version, node: this.#c.node, source, ts, requestId }, row)
    }
    return rows
  }

  /**
   * Resolves once the model can predict. A request that arrives while it
   * loads waits a little (loading takes a second or two); past that it is
   * a ModelLoadingError, which clients see as 503 with Retry-After.
   */
  async loaded (): Promise<void> {
    if (this.#state === 'running') return
    if (this.#state !== 'starting') throw new InstanceStoppedError(`model ${this.name} is ${this.#state}`)
    const waitMs = this.#init.loadWaitMs ?? DEFAULT_LOAD_WAIT_MS
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new ModelLoadingError(`model ${this.name} is loading; try again shortly`, Math.max(1, Math.ceil(waitMs / 1000)))) }, waitMs)
    })
    try {
      await Promise.race([this.#started.promise, timeout])
    } catch (err) {
      if (err instanceof ModelLoadingError) throw err
      throw new InstanceStoppedError(`model ${this.name} failed to load: ${(err as Error).message}`)
    } finally {
      clearTimeout(timer)
    }
  }

  async #runBatch (items: CheckedInstance[]): Promise<Nested[][]> {
    const { inputs, outputs } = this.bundle.manifest
    const result = await this.#pool.run(toBatch(items, inputs))
    this.#c.metrics?.inferenceSeconds.observe({ model: this.name }, result.ms / 1000)
    this.#c.metrics?.batchSize.observe({ model: this.name }, items.length)
    return items.map((_, i) => outputs.map((_o, k) => rowOf(result.outputs[k]!, i)))
  }

  /** sensors → window → model → rules, until stopped. A failed prediction is logged and the stream goes on. */
  async #runPipeline (): Promise<void> {
    const input = this.spec.input!
    const window = new SensorWindow(input)
    const signal = this.#abort.signal
    const specs = this.bundle.manifest.inputs
    const log = this.#c.logger
    try {
      await pipe(
        merge(...input.sensors.map(id => this.#c.sensors.get(id)!.readings({ signal }))),
        async function * (source: AsyncIterable<Reading>) {
          for await (const reading of source) {
            const values = window.push(reading)
            if (values != null) yield { reading, values, stats: window.stats(reading.sensorId) }
          }
        },
        async (source: AsyncIterable<{ reading: Reading, values: number[] | number[][], stats: ReturnType<SensorWindow['stats']> }>) => {
          for await (const { reading, values, stats } of source) {
            try {
              const checked = checkInstance([values], specs, ['window'])
              await this.predict([checked], 'sensor', { sensor: reading.sensorId, reading: { value: reading.value, ts: reading.ts }, window: stats, ts: reading.ts })
            } catch (err: any) {
              if (signal.aborted) return
              log.warn({ model: this.name, err: err.message, code: err.code }, 'prediction from sensor window failed')
            }
          }
        }
      )
    } catch (err: any) {
      if (!signal.aborted) log.error({ model: this.name, err: err.message }, 'sensor pipeline ended')
    }
  }

  /**
   * Queue the actions of the rules `event` fires. Each job's id is made from
   * the request id, the instance, rule and action and the row: a request
   * the router retried on another replica fires the same ids there, which
   * receivers drop, and one that reaches this node again is dropped by the
   * outbox.
   */
  async #applyRules (event: Record<string, unknown> & { requestId: string }, row: number): Promise<void> {
    for (const { rule, spec } of this.#rules) {
      if (!rule.test(event)) continue
      this.#c.metrics?.ruleFired.inc({ model: this.name, rule: rule.name })
      const fired = { ...event, rule: rule.name, instance: this.name }
      for (const [index, action] of spec.actions.entries()) {
        const id = actionKey({ requestId: event.requestId, instance: this.name, rule: rule.name, action: index, row })
        const job: EnqueueInput = { id, type: action.type, action: renderAction(action, fired), event: fired, instance: this.name, rule: rule.name }
        if (action.type === 'script' && this.bundle.actionPath != null) job.script = { path: this.bundle.actionPath, scratch: this.#init.scratchDir, network: this.spec.script?.network ?? [] }
        try {
          await this.#c.outbox.enqueue(job)
        } catch (err: any) {
          this.#c.logger.error({ model: this.name, rule: rule.name, type: action.type, err: err.message }, 'could not queue action')
        }
      }
    }
  }

  /** TensorFlow Serving's GetModelStatus answer. */
  status (): { model_version_status: Array<{ version: string, state: string, status: { error_code: string, error_message: string } }> } {
    const state = { starting: 'LOADING', running: 'AVAILABLE', stopping: 'UNLOADING', stopped: 'END', failed: 'END' }[this.#state]
    return {
      model_version_status: [{
        version: this.version,
        state,
        status: { error_code: this.#state === 'failed' ? 'UNKNOWN' : 'OK', error_message: this.#reason ?? '' }
      }]
    }
  }

  describe (): Record<string, unknown> {
    return {
      name: this.name,
      model: this.bundle.manifest.name,
      version: this.version,
      state: this.#state,
      format: this.format,
      backend: this.backend ?? null,
      workers: this.#pool.size,
      sensors: this.spec.input?.sensors ?? [],
      rules: this.#rules.map(r => ({ name: r.rule.name, when: r.rule.when, fired: r.rule.fired })),
      batches: this.#batcher.stats(),
      bundle: { dir: this.bundle.dir, manifestDigest: this.bundle.manifestDigest, signer: this.bundle.signer },
      startedAt: this.startedAt,
      ...(this.#reason == null ? {} : { reason: this.#reason })
    }
  }
}

function deferred (): { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void } {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

/** Fill an action's templates from the event. */
export function renderAction (action: ActionSpec, event: Record<string, unknown>): ActionSpec {
  switch (action.type) {
    case 'log': return { ...action, message: render(action.message, event) }
    case 'mqtt.publish': return { ...action, topic: render(action.topic, event), ...(action.payload == null ? {} : { payload: render(action.payload, event) }) }
    case 'http.post': return { ...action, ...(action.body == null ? {} : { body: render(action.body, event) }) }
    case 'sms': return { ...action, body: render(action.body, event) }
    case 'email': return { ...action, subject: render(action.subject, event), text: render(action.text, event) }
    default: return action
  }
}

export function scratchDirFor (dataDir: string, name: string): string {
  return join(dataDir, 'scratch', name)
}
