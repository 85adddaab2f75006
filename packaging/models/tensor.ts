/**
 * Tensors as they cross thread, process and wire boundaries: a dtype, a
 * shape (batch first) and a flat typed array. One vocabulary for every
 * runtime (TensorFlow.js, ONNX Runtime, LiteRT) and every protocol (REST,
 * gRPC, the mesh).
 */

/** The element types gatemesh carries; which a model may use depends on its runtime. */
export const DTYPES = ['float32', 'float64', 'int32', 'int64', 'uint8', 'bool', 'string'] as const
export type DType = typeof DTYPES[number]

/** float32 → Float32Array, float64 → Float64Array, int32 → Int32Array, int64 → BigInt64Array, uint8 and bool → Uint8Array, string → string[]. */
export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | string[]

/** A tensor crossing a boundary; typed-array `data` is transferred between threads, not copied. */
export interface WireTensor {
  dtype: DType
  shape: number[]
  data: TensorData
}

/** An empty (zeroed) array of `n` elements of `dtype`. */
export function allocate (dtype: DType, n: number): TensorData {
  switch (dtype) {
    case 'float32': return new Float32Array(n)
    case 'float64': return new Float64Array(n)
    case 'int32': return new Int32Array(n)
    case 'int64': return new BigInt64Array(n)
    case 'uint8':
    case 'bool': return new Uint8Array(n)
    case 'string': return Array.from({ length: n }, () => '')
  }
}

/** Elements in a tensor of `shape`. */
export function sizeOf (shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1)
}

/** Rows [from, to) of a batch-first tensor, as a view where the data allows it. */
export function sliceRows (t: WireTensor, from: number, to: number): WireTensor {
  const per = sizeOf(t.shape.slice(1))
  return { dtype: t.dtype, shape: [to - from, ...t.shape.slice(1)], data: t.data.slice(from * per, to * per) as TensorData }
}

/** Batch-first tensors joined along the batch dimension. */
export function concatRows (parts: WireTensor[]): WireTensor {
  const first = parts[0]!
  const rows = parts.reduce((n, p) => n + (p.shape[0] ?? 1), 0)
  const data = allocate(first.dtype, parts.reduce((n, p) => n + p.data.length, 0))
  let at = 0
  for (const p of parts) {
    if (Array.isArray(data)) (p.data as string[]).forEach((s, i) => { data[at + i] = s })
    else (data as Uint8Array).set(p.data as Uint8Array, at)
    at += p.data.length
  }
  return { dtype: first.dtype, shape: [rows, ...first.shape.slice(1)], data }
}

/** `t` padded with zero rows up to `rows` (fixed-batch models take whole batches only). */
export function padRows (t: WireTensor, rows: number): WireTensor {
  const have = t.shape[0] ?? 1
  if (have >= rows) return t
  const per = sizeOf(t.shape.slice(1))
  return concatRows([t, { dtype: t.dtype, shape: [rows - have, ...t.shape.slice(1)], data: allocate(t.dtype, (rows - have) * per) }])
}

/** Buffers to transfer with a postMessage (string tensors are cloned). */
export function transferables (tensors: WireTensor[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>()
  for (const t of tensors) if (!Array.isArray(t.data)) out.add(t.data.buffer as ArrayBuffer)
  return [...out]
}
