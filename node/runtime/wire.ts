import type { ModelFormat, TensorSpec } from '../../packaging/manifest.ts'
import type { BackendName, OnnxBackendPreference, TfjsBackendPreference } from '../../packaging/models/runner.ts'
import type { WireTensor } from '../../packaging/models/tensor.ts'

export type { TensorData, WireTensor } from '../../packaging/models/tensor.ts'

export type ToWorker =
  | { type: 'load', path: string, format: ModelFormat, tfjsBackend: TfjsBackendPreference, onnxBackend: OnnxBackendPreference, maxBatch: number }
  | { type: 'run', id: number, inputs: WireTensor[] }

export type FromWorker =
  | { type: 'ready', backend: BackendName, inputs: TensorSpec[], outputs: TensorSpec[] }
  | { type: 'result', id: number, outputs: WireTensor[], ms: number }
  | { type: 'error', id?: number, code: string, message: string }
