import { allocate, sizeOf, type DType, type TensorData, type WireTensor } from '../../packaging/models/tensor.ts'

/**
 * TensorFlow's TensorProto ↔ gatemesh's tensors. Decoding takes either
 * representation TF clients send — raw little-endian `tensor_content` (what
 * `tf.make_tensor_proto` writes) or the typed `*_val` fields (including
 * TF's rule that one value fills the whole shape) — and checks every size
 * against the shape before allocating anything. Encoding writes what
 * TensorFlow writes: numbers in `tensor_content`, strings in `string_val`.
 */

/** A TensorProto as @grpc/proto-loader and protobufjs give it (MESSAGE_OPTIONS). */
export interface TensorProtoObject {
  dtype?: string
  tensor_shape?: { dim?: Array<{ size?: string | number, name?: string }>, unknown_rank?: boolean } | null
  version_number?: number
  tensor_content?: Uint8Array
  float_val?: number[]
  double_val?: number[]
  int_val?: number[]
  string_val?: Uint8Array[]
  int64_val?: Array<string | number>
  bool_val?: boolean[]
  half_val?: number[]
}

export class TensorProtoError extends Error {
  readonly code = 'ERR_INVALID_INPUT'
  override readonly name = 'TensorProtoError'
  readonly field: string
  constructor (message: string, field: string) {
    super(`${field}: ${message}`)
    this.field = field
  }
}

/** Elements one tensor may have: 16 Mi (64 MiB of float32), past any predict body. */
export const MAX_TENSOR_ELEMENTS = 16 * 1024 * 1024
const MAX_RANK = 8

export const DT_OF: Record<DType, string> = { float32: 'DT_FLOAT', float64: 'DT_DOUBLE', int32: 'DT_INT32', int64: 'DT_INT64', uint8: 'DT_UINT8', bool: 'DT_BOOL', string: 'DT_STRING' }
const DTYPE_OF: Record<string, DType> = Object.fromEntries(Object.entries(DT_OF).map(([k, v]) => [v, k as DType]))
const ITEM_BYTES: Partial<Record<DType, number>> = { float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1, bool: 1 }

/** TF's DataType name of a dtype, e.g. DT_FLOAT. */
export function dataTypeOf (dtype: DType): string {
  return DT_OF[dtype]
}

/** The shape of a TensorShapeProto, checked (known rank, sizes ≥ 0, at most MAX_RANK dimensions). */
export function shapeOf (shape: TensorProtoObject['tensor_shape'], field: string): number[] {
  if (shape?.unknown_rank === true) throw new TensorProtoError('a tensor of unknown rank cannot be fed', `${field}.tensor_shape`)
  const dims = shape?.dim ?? []
  if (dims.length > MAX_RANK) throw new TensorProtoError(`has ${dims.length} dimensions; at most ${MAX_RANK}`, `${field}.tensor_shape`)
  return dims.map((d, i) => {
    const size = Number(d.size ?? 0)
    if (!Number.isSafeInteger(size) || size < 0) throw new TensorProtoError(`dimension ${i} has size ${String(d.size)}`, `${field}.tensor_shape`)
    return size
  })
}

/** A TensorProto from a client as a tensor; `field` names it in errors (e.g. `inputs.readings`). */
export function decodeTensor (proto: TensorProtoObject, field: string): WireTensor {
  const dtype = DTYPE_OF[proto.dtype ?? 'DT_INVALID']
  if (dtype == null) throw new TensorProtoError(`dtype ${String(proto.dtype)} is not supported (DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_UINT8, DT_BOOL, DT_STRING)`, `${field}.dtype`)
  const shape = shapeOf(proto.tensor_shape, field)
  const n = sizeOf(shape)
  if (n > MAX_TENSOR_ELEMENTS) throw new TensorProtoError(`has ${n} elements; at most ${MAX_TENSOR_ELEMENTS}`, `${field}.tensor_shape`)
  const content = proto.tensor_content
  if (content != null && content.byteLength > 0) {
    if (dtype === 'string') throw new TensorProtoError('string tensors go in string_val, not tensor_content', `${field}.tensor_content`)
    const item = ITEM_BYTES[dtype]!
    if (content.byteLength !== n * item) throw new TensorProtoError(`holds ${content.byteLength} bytes; shape [${shape.join(', ')}] of ${dtype} needs ${n * item}`, `${field}.tensor_content`)
    return { dtype, shape, data: fromBytes(dtype, content, n) }
  }
  const values = typedValues(proto, dtype)
  if (values.length !== n && !(values.length === 1 && n > 0)) {
    throw new TensorProtoError(`holds ${values.length} values; shape [${shape.join(', ')}] needs ${n}`, `${field}.${valField(dtype)}`)
  }
  const data = allocate(dtype, n)
  // one value fills the whole shape (TensorProto's version 0 rule)
  for (let i = 0; i < n; i++) {
    const v = values.length === 1 ? values[0] : values[i]
    if (Array.isArray(data)) data[i] = Buffer.from(v as Uint8Array).toString('utf8')
    else if (data instanceof BigInt64Array) data[i] = BigInt(v as string | number)
    else (data as Float32Array)[i] = v === true ? 1 : v === false ? 0 : Number(v)
  }
  return { dtype, shape, data }
}

function valField (dtype: DType): string {
  return ({ float32: 'float_val', float64: 'double_val', int32: 'int_val', uint8: 'int_val', int64: 'int64_val', bool: 'bool_val', string: 'string_val' } as const)[dtype]
}

function typedValues (proto: TensorProtoObject, dtype: DType): ArrayLike<unknown> {
  return (proto[valField(dtype) as keyof TensorProtoObject] as ArrayLike<unknown> | undefined) ?? []
}

function fromBytes (dtype: DType, bytes: Uint8Array, n: number): TensorData {
  // an aligned copy of our own: the message's buffer may be shared and unaligned
  const copy = new Uint8Array(bytes).buffer
  const view = new DataView(copy)
  switch (dtype) {
    case 'float32': return Float32Array.from({ length: n }, (_, i) => view.getFloat32(i * 4, true))
    case 'float64': return Float64Array.from({ length: n }, (_, i) => view.getFloat64(i * 8, true))
    case 'int32': return Int32Array.from({ length: n }, (_, i) => view.getInt32(i * 4, true))
    case 'int64': return BigInt64Array.from({ length: n }, (_, i) => view.getBigInt64(i * 8, true))
    default: return new Uint8Array(copy)
  }
}

/** A tensor as TensorFlow writes it: dtype, shape, and the data in tensor_content (strings in string_val). */
export function encodeTensor (t: WireTensor): TensorProtoObject {
  const proto: TensorProtoObject = { dtype: DT_OF[t.dtype], tensor_shape: { dim: t.shape.map(size => ({ size: String(size) })) } }
  if (Array.isArray(t.data)) {
    proto.string_val = t.data.map(s => Buffer.from(s, 'utf8'))
    return proto
  }
  const item = ITEM_BYTES[t.dtype]!
  const out = Buffer.alloc(t.data.length * item)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  const data = t.data
  for (let i = 0; i < data.length; i++) {
    switch (t.dtype) {
      case 'float32': view.setFloat32(i * 4, data[i] as number, true); break
      case 'float64': view.setFloat64(i * 8, data[i] as number, true); break
      case 'int32': view.setInt32(i * 4, data[i] as number, true); break
      case 'int64': view.setBigInt64(i * 8, data[i] as bigint, true); break
      default: view.setUint8(i, data[i] as number)
    }
  }
  proto.tensor_content = out
  return proto
}
