import { parentPort } from 'node:worker_threads'
import { openModel, type ModelRunner } from '../../packaging/models/runner.ts'
import { transferables } from '../../packaging/models/tensor.ts'
import type { FromWorker, ToWorker } from './wire.ts'

/**
 * An inference worker: loads one model with the runtime of its format
 * (TensorFlow.js, ONNX Runtime or LiteRT), then runs batches posted by the
 * pool. Everything heavy lives in this thread so the agent's event loop
 * never blocks on inference.
 */

const port = parentPort!
let runner: ModelRunner | undefined

function post (message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer)
}

async function load (msg: Extract<ToWorker, { type: 'load' }>): Promise<void> {
  // opening runs the model once on zeros: a warm-up, so the first real request does not pay for kernel set-up
  runner = await openModel({ format: msg.format, path: msg.path, tfjsBackend: msg.tfjsBackend, onnxBackend: msg.onnxBackend, maxBatch: msg.maxBatch })
  post({ type: 'ready', backend: runner.backend, inputs: runner.inputs, outputs: runner.outputs })
}

async function run (msg: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  const start = performance.now()
  const outputs = await runner!.run(msg.inputs)
  post({ type: 'result', id: msg.id, outputs, ms: performance.now() - start }, transferables(outputs))
}

port.on('message', (msg: ToWorker) => {
  const task = msg.type === 'load' ? load(msg) : run(msg)
  task.catch((err: Error) => {
    post({ type: 'error', ...(msg.type === 'run' ? { id: msg.id } : {}), code: msg.type === 'load' ? 'ERR_MODEL_LOAD' : 'ERR_INFERENCE', message: err.message })
  })
})
