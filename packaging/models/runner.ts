import type { ModelFormat, TensorSpec } from '../manifest.ts'
import { ModelFormatError } from './errors.ts'
import { allocate, sizeOf, type WireTensor } from './tensor.ts'

/** TensorFlow.js backend wanted: `auto` is tfjs-node if it loads, else wasm, else cpu. */
export type TfjsBackendPreference = 'auto' | 'tensorflow' | 'wasm' | 'cpu'
/** ONNX Runtime wanted: `auto` is the native binding (onnxruntime-node) if it loads, else wasm (onnxruntime-web). */
export type OnnxBackendPreference = 'auto' | 'native' | 'wasm'

/**
 * The backend a model runs on. TensorFlow.js keeps its own names (`wasm`,
 * `cpu`, `tensorflow`); ONNX Runtime is `onnx-native` or `onnx-wasm`;
 * LiteRT is `litert-wasm`.
 */
export type BackendName = 'tensorflow' | 'wasm' | 'cpu' | 'onnx-native' | 'onnx-wasm' | 'litert-wasm'

export interface OpenModelInit {
  format: ModelFormat
  /** absolute path of the model entry: model.json, the .onnx or the .tflite file */
  path: string
  /** @default 'auto' */
  tfjsBackend?: TfjsBackendPreference
  /** @default 'auto' */
  onnxBackend?: OnnxBackendPreference
  /** rows a batch may have at most; fixed-batch runtimes size their batches by it. @default 8 */
  maxBatch?: number
}

/**
 * One loaded model, whatever its format: what it declares, and `run`, which
 * takes one batch-first tensor per input in the order of `inputs` and
 * answers one per output in the order of `outputs`.
 */
export interface ModelRunner {
  readonly format: ModelFormat
  readonly backend: BackendName
  /** the inputs and outputs as the model itself declares them (`-1`: any size) */
  readonly inputs: TensorSpec[]
  readonly outputs: TensorSpec[]
  run(inputs: WireTensor[]): Promise<WireTensor[]>
  dispose(): Promise<void>
}

/** Load a model with the runtime of its format. Only ever called inside a worker thread or a model-check child. */
export async function openModel (init: OpenModelInit): Promise<ModelRunner> {
  switch (init.format) {
    case 'tfjs-layers':
    case 'tfjs-graph': return await (await import('./tfjs.ts')).openTfjs(init)
    case 'onnx': return await warm(await (await import('./onnx.ts')).openOnnx(init))
    case 'tflite': return await warm(await (await import('./tflite.ts')).openTflite(init))
  }
}

/** One run on zeros: proves the model executes, and the first real request does not pay for kernel set-up. */
async function warm (runner: ModelRunner): Promise<ModelRunner> {
  try {
    await runner.run(zeroInputs(runner.inputs))
  } catch (err: any) {
    await runner.dispose()
    throw new ModelFormatError(`the ${runner.format} model loads but does not run on zero inputs: ${String(err.message).slice(0, 500)}`, { cause: err })
  }
  return runner
}

/** Zero inputs of batch 1 (any other free dimension 1 too): what warm-ups and model checks run. */
export function zeroInputs (specs: TensorSpec[]): WireTensor[] {
  return specs.map(s => {
    const shape = s.shape.map(d => d < 0 ? 1 : d)
    return { dtype: s.dtype, shape, data: allocate(s.dtype, sizeOf(shape)) }
  })
}
