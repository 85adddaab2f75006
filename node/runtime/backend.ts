import { loadTf, type Tf } from '../../packaging/tfjs/backend.ts'
import type { BackendName, OnnxBackendPreference, TfjsBackendPreference } from '../../packaging/models/runner.ts'
import type { ModelFormat } from '../../packaging/manifest.ts'

export type { BackendName, OnnxBackendPreference } from '../../packaging/models/runner.ts'
export type BackendPreference = TfjsBackendPreference

/** The runtime families, each with its own backend. */
export type RuntimeFamily = 'tfjs' | 'onnx' | 'tflite'

export function familyOf (format: ModelFormat): RuntimeFamily {
  return format === 'onnx' ? 'onnx' : format === 'tflite' ? 'tflite' : 'tfjs'
}

// variables, so neither tsc nor a bundler goes looking for packages that may be absent
const TFJS_NODE = '@tensorflow/tfjs-node'
const ORT_NODE = 'onnxruntime-node'

/**
 * TensorFlow.js with the best backend this machine has (tfjs-node, else
 * wasm, else cpu; see packaging/tfjs/backend.ts), for tools that build
 * models (the demo's training). Inference loads its runtime inside workers
 * (packaging/models): the agent's main thread never loads one.
 */
export async function loadBackend (preference: BackendPreference = 'auto'): Promise<{ tf: Tf, backend: 'tensorflow' | 'wasm' | 'cpu' }> {
  // tfjs prints an install hint for tfjs-node on import; the backend is chosen on purpose
  const warn = console.warn
  console.warn = () => {}
  try {
    const { tf, backend } = await loadTf(preference === 'auto' ? undefined : preference)
    if (preference !== 'auto' && backend !== preference) throw new Error(`backend ${preference} is not available here (got ${backend})`)
    return { tf, backend: backend as 'tensorflow' | 'wasm' | 'cpu' }
  } finally {
    console.warn = warn
  }
}

const resolves = (name: string): boolean => {
  try {
    import.meta.resolve(name)
    return true
  } catch {
    return false
  }
}

/**
 * The backend each runtime would pick, judged by which packages resolve,
 * without loading any of them: what an idle agent advertises before its
 * first instance of a format starts. (A native binding that resolves may
 * still fail to load — e.g. under an emulator — and the instance then
 * reports the wasm fallback it really runs on.)
 */
export function probeBackends (tfjs: BackendPreference = 'auto', onnx: OnnxBackendPreference = 'auto'): Record<RuntimeFamily, BackendName> {
  const tfjsBackend: BackendName = tfjs !== 'auto' ? tfjs : resolves(TFJS_NODE) ? 'tensorflow' : resolves('@tensorflow/tfjs-backend-wasm') ? 'wasm' : 'cpu'
  const onnxBackend: BackendName = onnx === 'wasm' || (onnx === 'auto' && !resolves(ORT_NODE)) ? 'onnx-wasm' : 'onnx-native'
  return { tfjs: tfjsBackend, onnx: onnxBackend, tflite: 'litert-wasm' }
}
