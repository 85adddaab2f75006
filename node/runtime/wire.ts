import type { TensorSpec } from '../../packaging/manifest.ts'
import type { BackendName, BackendPreference } from './backend.ts'

/** Typed array per dtype: float32 → Float32Array, int32 → Int32Array, bool → Uint8Array. */
export type TensorData = Float32Array | Int32Array | Uint8Array

/** A tensor crossing the worker boundary; `data` is transferred, not copied. */
export interface WireTensor {
  dtype: 'float32' | 'int32' | 'bool'
  shape: number[]
  data: TensorData
}

export type ToWorker =
  | { type: 'load', dir: string, entry: string, format: 'layers' | 'graph', backend: BackendPreference, inputs: TensorSpec[], outputs: TensorSpec[] }
  | { type: 'run', id: number, inputs: WireTensor[] }

export type FromWorker =
  | { type: 'ready', backend: BackendName }
  | { type: 'result', id: number, outputs: WireTensor[], ms: number }
  | { type: 'error', id?: number, code: string, message: string }
