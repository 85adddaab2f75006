import { readFile } from 'node:fs/promises'
import { ModelFormatError, RuntimeUnavailableError } from './errors.ts'
import type { TensorSpec } from '../manifest.ts'
import type { BackendName, ModelRunner, OpenModelInit } from './runner.ts'
import type { DType, TensorData, WireTensor } from './tensor.ts'
import type * as Ort from 'onnxruntime-common'

type OrtModule = typeof Ort

/** ONNX element types gatemesh carries, by ONNX Runtime's name. */
const FROM_ORT: Record<string, DType> = { float32: 'float32', float64: 'float64', int32: 'int32', int64: 'int64', uint8: 'uint8', bool: 'bool', string: 'string' }

let native: Promise<OrtModule> | undefined
let wasm: Promise<OrtModule> | undefined


async function loadNative (): Promise<OrtModule> {
  // both packages are bundle externals: they locate their binaries beside themselves
  native ??= import('onnxruntime-node') as Promise<OrtModule>
  return await native
}

async function loadWasm (): Promise<OrtModule> {
  wasm ??= (async () => {
    const ort = await import('onnxruntime-web') as OrtModule
    // one thread: inference already runs in one worker per replica, and wasm threads would need workers of their own
    ort.env.wasm.numThreads = 1
    ort.env.wasm.proxy = false
    return ort
  })()
  return await wasm
}

/**
 * ONNX Runtime with the backend asked for: the native binding
 * (onnxruntime-node), or its WebAssembly build (onnxruntime-web) where the
 * binding cannot load — e.g. no binary for this CPU, or an emulator it
 * crashes under. `auto` tries native first.
 */
export async function loadOrt (preference: OpenModelInit['onnxBackend'] = 'auto'): Promise<{ ort: OrtModule, backend: BackendName }> {
  if (preference !== 'wasm' && process.env.GATEMESH_ONNX_BACKEND !== 'wasm') {
    try {
      return { ort: await loadNative(), backend: 'onnx-native' }
    } catch (err: any) {
      native = undefined
      if (preference === 'native') throw new RuntimeUnavailableError(`the native ONNX Runtime (onnxruntime-node) cannot load here: ${err.message}`, { cause: err })
    }
  }
  try {
    return { ort: await loadWasm(), backend: 'onnx-wasm' }
  } catch (err: any) {
    wasm = undefined
    throw new RuntimeUnavailableError(`no ONNX Runtime can load here (onnxruntime-web: ${err.message})`, { cause: err })
  }
}

function specOf (meta: Ort.InferenceSession.ValueMetadata, what: string): TensorSpec {
  if (!meta.isTensor) throw new ModelFormatError(`${what} ${meta.name}: is not a tensor (a sequence or map, e.g. skl2onnx's ZipMap); export the model with tensor outputs (skl2onnx: options={id(model): {'zipmap': False}})`)
  const dtype = FROM_ORT[meta.type]
  if (dtype == null) throw new ModelFormatError(`${what} ${meta.name}: element type ${meta.type} is not supported (use one of ${Object.keys(FROM_ORT).join(', ')})`)
  // symbolic dimensions ("batch", "N") take any size
  return { name: meta.name.slice(0, 128), dtype, shape: meta.shape.map(d => typeof d === 'number' && d >= 0 ? d : -1) }
}

/**
 * An ONNX model. Inputs are fed by name, outputs fetched by name, so a
 * model with several of each works in any order its graph lists them.
 */
export async function openOnnx (init: OpenModelInit): Promise<ModelRunner> {
  const { ort, backend } = await loadOrt(init.onnxBackend)
  let bytes: Buffer
  try {
    bytes = await readFile(init.path)
  } catch (err: any) {
    throw new ModelFormatError(`cannot read the ONNX model: ${err.message}`, { cause: err })
  }
  let session: Ort.InferenceSession
  try {
    const options: Ort.InferenceSession.SessionOptions = backend === 'onnx-native'
      ? { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' }
      : { executionProviders: ['wasm'], graphOptimizationLevel: 'all' }
    session = await ort.InferenceSession.create(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), options)
  } catch (err: any) {
    throw new ModelFormatError(`ONNX Runtime cannot load this model: ${String(err.message).slice(0, 500)}`, { cause: err })
  }
  let inputs: TensorSpec[]
  let outputs: TensorSpec[]
  try {
    inputs = session.inputMetadata.map(m => specOf(m, 'input'))
    outputs = session.outputMetadata.map(m => specOf(m, 'output'))
  } catch (err) {
    await session.release()
    throw err
  }
  const outputNames = outputs.map(o => o.name)
  const run = async (wire: WireTensor[]): Promise<WireTensor[]> => {
    const feeds: Record<string, Ort.Tensor> = {}
    wire.forEach((w, i) => {
      const spec = inputs[i]!
      feeds[spec.name] = new ort.Tensor(w.dtype as any, w.data as any, w.shape)
    })
    const result = await session.run(feeds, outputNames)
    return outputNames.map(name => {
      const t = result[name]!
      const dtype = FROM_ORT[t.type]
      if (dtype == null) throw new ModelFormatError(`output ${name}: element type ${t.type} is not supported`)
      // bool outputs come back as Uint8Array already; copy so the runtime's buffer is ours to transfer
      const data = (Array.isArray(t.data) ? [...t.data] : (t.data as Uint8Array).slice()) as TensorData
      t.dispose()
      return { dtype, shape: [...t.dims], data }
    })
  }
  const runner: ModelRunner = {
    format: 'onnx',
    backend,
    inputs,
    outputs,
    run,
    dispose: async () => { await session.release() }
  }
  return runner
}
