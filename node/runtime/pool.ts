import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { InferenceError, InstanceStoppedError, ModelLoadError } from './errors.ts'
import { transferables } from '../../packaging/models/tensor.ts'
import type { ModelFormat, TensorSpec } from '../../packaging/manifest.ts'
import type { BackendName, OnnxBackendPreference, TfjsBackendPreference } from '../../packaging/models/runner.ts'
import type { FromWorker, ToWorker, WireTensor } from './wire.ts'
import type { Logger } from 'pino'

// the app bundle (packaging/app-bundle.ts) ships the worker as a file of its
// own beside its entry, which is what the process was started with
declare const GATEMESH_BUNDLED_WORKER: string | undefined
const WORKER_URL = typeof GATEMESH_BUNDLED_WORKER === 'string'
  ? pathToFileURL(join(dirname(process.argv[1] ?? '.'), GATEMESH_BUNDLED_WORKER))
  : new URL('./worker.ts', import.meta.url)

export interface PoolInit {
  /** worker threads, each with its own copy of the model. @default 1 */
  size?: number
  /** absolute path of the model entry (model.json, .onnx, .tflite) */
  path: string
  format: ModelFormat
  /** @default 'auto' */
  tfjsBackend?: TfjsBackendPreference
  /** @default 'auto' */
  onnxBackend?: OnnxBackendPreference
  /** rows per batch at most (fixed-shape runtimes size their slices by it). @default 8 */
  maxBatch?: number
  logger: Pick<Logger, 'info' | 'warn' | 'error'>
  /** how long a worker may take to load its runtime and the model. @default 60000 */
  loadTimeoutMs?: number
}

interface Slot {
  worker: Worker
  pending: Map<number, { resolve: (r: { outputs: WireTensor[], ms: number }) => void, reject: (err: Error) => void }>
}

/**
 * A fixed set of inference workers for one model. Batches go to the worker
 * with the fewest in flight; a worker that dies fails its own batches and is
 * replaced, so one bad input cannot stop the instance.
 */
export class WorkerPool {
  readonly #init: PoolInit
  readonly #slots: Slot[] = []
  #nextId = 1
  #backend?: BackendName
  #declared?: { inputs: TensorSpec[], outputs: TensorSpec[] }
  #stopping = false

  constructor (init: PoolInit) {
    this.#init = init
  }

  /** The backend the workers run on; known once `start()` resolves. */
  get backend (): BackendName | undefined {
    return this.#backend
  }

  /** What the loaded model declares; known once `start()` resolves. */
  get declared (): { inputs: TensorSpec[], outputs: TensorSpec[] } | undefined {
    return this.#declared
  }

  get size (): number {
    return this.#slots.length
  }

  async start (): Promise<void> {
    const n = this.#init.size ?? 1
    try {
      await Promise.all(Array.from({ length: n }, async () => { this.#slots.push(await this.#spawn()) }))
    } catch (err) {
      await this.stop()
      throw err
    }
  }

  /** Run one batch: inputs in manifest order, batch dimension first. */
  async run (inputs: WireTensor[]): Promise<{ outputs: WireTensor[], ms: number }> {
    if (this.#stopping) throw new InstanceStoppedError('the instance is stopping')
    const slot = this.#slots.reduce<Slot | undefined>((best, s) => best == null || s.pending.size < best.pending.size ? s : best, undefined)
    if (slot == null) throw new InstanceStoppedError('no inference worker is running')
    const id = this.#nextId++
    return await new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject })
      const msg: ToWorker = { type: 'run', id, inputs }
      slot.worker.postMessage(msg, transferables(inputs))
    })
  }

  async stop (): Promise<void> {
    this.#stopping = true
    const slots = this.#slots.splice(0)
    for (const s of slots) {
      for (const p of s.pending.values()) p.reject(new InstanceStoppedError('the instance stopped'))
      s.pending.clear()
    }
    await Promise.all(slots.map(async s => await s.worker.terminate()))
  }

  async #spawn (): Promise<Slot> {
    const { path, format } = this.#init
    const worker = new Worker(WORKER_URL, { stdout: false, stderr: false })
    const slot: Slot = { worker, pending: new Map() }
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { fail(new ModelLoadError(`the model did not load within ${this.#init.loadTimeoutMs ?? 60_000} ms`)) }, this.#init.loadTimeoutMs ?? 60_000)
      const fail = (err: Error): void => {
        clearTimeout(timer)
        worker.off('message', onLoad)
        void worker.terminate()
        reject(err)
      }
      const onLoad = (msg: FromWorker): void => {
        if (msg.type === 'ready') {
          clearTimeout(timer)
          worker.off('message', onLoad)
          worker.off('error', fail)
          this.#backend = msg.backend
          this.#declared = { inputs: msg.inputs, outputs: msg.outputs }
          resolve()
        } else if (msg.type === 'error') {
          fail(new ModelLoadError(`model ${path.split('/').pop() ?? path} (${format}): ${msg.message}`))
        }
      }
      worker.on('message', onLoad)
      worker.once('error', fail)
      const load: ToWorker = { type: 'load', path, format, tfjsBackend: this.#init.tfjsBackend ?? 'auto', onnxBackend: this.#init.onnxBackend ?? 'auto', maxBatch: this.#init.maxBatch ?? 8 }
      worker.postMessage(load)
    })
    worker.on('message', (msg: FromWorker) => {
      if (msg.type === 'ready') return
      const p = msg.id == null ? undefined : slot.pending.get(msg.id)
      if (p == null) return
      slot.pending.delete(msg.id!)
      if (msg.type === 'result') p.resolve({ outputs: msg.outputs, ms: msg.ms })
      else p.reject(new InferenceError(msg.message))
    })
    worker.on('error', err => { this.#init.logger.error({ err: err.message }, 'inference worker crashed') })
    worker.on('exit', code => {
      for (const p of slot.pending.values()) p.reject(new InferenceError(`the inference worker exited (${code}) while running this batch`))
      slot.pending.clear()
      const i = this.#slots.indexOf(slot)
      if (this.#stopping || i < 0) return
      this.#slots.splice(i, 1)
      this.#init.logger.warn({ code }, 'inference worker exited; starting a new one')
      this.#spawn().then(s => { if (this.#stopping) void s.worker.terminate(); else this.#slots.push(s) }, err => {
        this.#init.logger.error({ err: err.message }, 'could not replace the inference worker')
      })
    })
    return slot
  }
}
