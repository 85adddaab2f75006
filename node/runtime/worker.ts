import { join } from 'node:path'
import { parentPort } from 'node:worker_threads'
import { fileLoadHandler } from '../../packaging/tfjs/file-io.ts'
import { loadBackend } from './backend.ts'
import type { FromWorker, ToWorker, WireTensor } from './wire.ts'
import type { Tf } from '../../packaging/tfjs/backend.ts'
import type * as TF from '@tensorflow/tfjs'

/**
 * An inference worker: loads TensorFlow.js and one model, then runs batches
 * posted by the pool. Everything heavy (tfjs, the wasm backend, the model)
 * lives in this thread so the agent's event loop never blocks on inference.
 */

const port = parentPort!
let tf: Tf
let model: TF.LayersModel | TF.GraphModel | undefined
let graphInputNames: string[] = []

function post (message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer)
}

async function load (msg: Extract<ToWorker, { type: 'load' }>): Promise<void> {
  const loaded = await loadBackend(msg.backend)
  tf = loaded.tf
  // the entry is a manifest path: relative, no `..` (checked by the manifest schema)
  const handler = fileLoadHandler(tf, join(msg.dir, msg.entry))
  if (msg.format === 'layers') {
    model = await tf.loadLayersModel(handler)
  } else {
    const graph = await tf.loadGraphModel(handler)
    graphInputNames = graph.inputs.map(i => i.name)
    model = graph
  }
  // one warm-up run so the first real request does not pay for kernel compilation
  const warm = msg.inputs.map(spec => tf.zeros(spec.shape.map(d => d < 0 ? 1 : d), spec.dtype === 'bool' ? 'bool' : spec.dtype === 'int32' ? 'int32' : 'float32'))
  tf.dispose(await execute(warm))
  tf.dispose(warm)
  post({ type: 'ready', backend: loaded.backend })
}

async function execute (inputs: TF.Tensor[]): Promise<TF.Tensor[]> {
  let out: TF.Tensor | TF.Tensor[] | TF.NamedTensorMap
  if (model instanceof tf.GraphModel) {
    const feed: TF.NamedTensorMap = {}
    inputs.forEach((t, i) => { feed[graphInputNames[i] ?? String(i)] = t })
    out = await model.executeAsync(feed)
  } else {
    out = (model as TF.LayersModel).predict(inputs.length === 1 ? inputs[0]! : inputs)
  }
  return out instanceof tf.Tensor ? [out] : Array.isArray(out) ? out : Object.values(out)
}

async function run (msg: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  const start = performance.now()
  const inputs = msg.inputs.map(w => tf.tensor(w.data, w.shape, w.dtype))
  try {
    const outputs = await execute(inputs)
    const wire: WireTensor[] = []
    for (const t of outputs) {
      const dtype = t.dtype === 'int32' ? 'int32' : t.dtype === 'bool' ? 'bool' : 'float32'
      // a copy we own: a backend may hand out its own storage (cpu) or a view of wasm memory, neither of which may be transferred
      const data = (await t.data() as WireTensor['data']).slice()
      wire.push({ dtype, shape: t.shape, data })
    }
    tf.dispose(outputs)
    post({ type: 'result', id: msg.id, outputs: wire, ms: performance.now() - start }, wire.map(w => w.data.buffer as ArrayBuffer))
  } finally {
    tf.dispose(inputs)
  }
}

port.on('message', (msg: ToWorker) => {
  const task = msg.type === 'load' ? load(msg) : run(msg)
  task.catch((err: Error) => {
    post({ type: 'error', ...(msg.type === 'run' ? { id: msg.id } : {}), code: msg.type === 'load' ? 'ERR_MODEL_LOAD' : 'ERR_INFERENCE', message: err.message })
  })
})
