import { DTYPES, type DType, type WireTensor } from '../../packaging/models/tensor.ts'
import { InvalidInputError, ModelNotFoundError } from './errors.ts'
import { instancesFromTensors, MAX_INSTANCES, parsePredictBody, stackRows, type Nested } from './tensors.ts'
import type { TensorSpec } from '../../packaging/manifest.ts'
import type { ModelInstance } from './instance.ts'
import type { Runtime } from './runtime.ts'

function instanceOf (runtime: Pick<Runtime, 'get'>, name: string, version: string | undefined): ModelInstance {
  const instance = runtime.get(name)
  if (version != null && instance.version !== version) throw new ModelNotFoundError(`model ${name} runs here in version ${instance.version}, not ${version}`)
  return instance
}

/**
 * TF Serving's predict, answered by the instance of `name` on this node.
 * `requestId`: the id the request got where it entered (the actions its
 * rules fire are keyed by it); a fresh one when absent.
 */
export async function predictLocal (runtime: Pick<Runtime, 'get'>, name: string, version: string | undefined, body: unknown, requestId?: string): Promise<Record<string, unknown>> {
  const instance = instanceOf(runtime, name, version)
  const { manifest } = instance.bundle
  const { instances, columnar } = parsePredictBody(body, manifest.inputs)
  const rows = await instance.predict(instances, 'api', requestId == null ? {} : { requestId })
  const single = manifest.outputs.length === 1
  const predictions = rows.map(r => single ? r[0]! : Object.fromEntries(manifest.outputs.map((o, k) => [o.name, r[k]!])))
  if (!columnar) return { predictions }
  // TF Serving answers the columnar form with `outputs`, batch-major per output
  const outputs = single ? rows.map(r => r[0]!) : Object.fromEntries(manifest.outputs.map((o, k) => [o.name, rows.map(r => r[k]!)])) as Record<string, Nested[]>
  return { outputs, predictions }
}

/** A typed predict's answer: batch-first tensors by output name, and which model version answered. */
export interface TensorAnswer {
  model: string
  version: string
  outputs: Record<string, WireTensor>
  /** answered here: ms from the decoded request to the output tensors (the in-process part) */
  servedMs?: number
}

/**
 * A `Server-Timing` value (W3C) for a predict answered on this node: how
 * long the in-process part took (body check, batcher, worker and back), so
 * a client can tell what HTTP or gRPC added from what the model took.
 */
export function serverTiming (servedMs: number): string {
  return `predict;dur=${servedMs.toFixed(3)}`
}

/** What GetModelMetadata reports: the model's signature. */
export interface MetadataAnswer {
  model: string
  version: string
  format: string
  inputs: TensorSpec[]
  outputs: TensorSpec[]
}

/**
 * Predict with tensors in and out (gRPC's form): inputs by name, batch
 * first; every output by name unless `filter` names some.
 */
export async function predictTensorsLocal (runtime: Pick<Runtime, 'get'>, name: string, version: string | undefined, inputs: Record<string, WireTensor>, filter: string[] = [], requestId?: string): Promise<TensorAnswer> {
  const start = performance.now()
  const instance = instanceOf(runtime, name, version)
  const { manifest } = instance.bundle
  const names = manifest.outputs.map(o => o.name)
  filter.forEach((f, i) => { if (!names.includes(f)) throw new InvalidInputError(`"${f}" is not an output of this model (its outputs: ${names.join(', ')})`, `output_filter[${i}]`) })
  const rows = await instance.predict(instancesFromTensors(inputs, manifest.inputs), 'api', requestId == null ? {} : { requestId })
  const outputs: Record<string, WireTensor> = {}
  manifest.outputs.forEach((o, k) => {
    if (filter.length === 0 || filter.includes(o.name)) outputs[o.name] = stackRows(rows.map(r => r[k]!), o.dtype)
  })
  return { model: instance.name, version: instance.version, outputs, servedMs: performance.now() - start }
}

export function metadataLocal (runtime: Pick<Runtime, 'get'>, name: string, version: string | undefined): MetadataAnswer {
  const instance = instanceOf(runtime, name, version)
  const { manifest } = instance.bundle
  return { model: instance.name, version: instance.version, format: manifest.model.format, inputs: manifest.inputs, outputs: manifest.outputs }
}

/**
 * A tensor as JSON, for the mesh. Fixed-width data (numbers, bools) travels
 * as the base64 of its little-endian bytes: 4/3 of the size gRPC received
 * it in, where decimal text would be up to six times that, so whatever fits
 * the predict body limit at the gRPC edge fits it on the mesh too (see
 * bodyLimitFor). Strings travel as a JSON array.
 */
export type JsonTensor = { dtype: DType, shape: number[], b64: string } | { dtype: 'string', shape: number[], data: string[] }

const ITEM_BYTES: Record<Exclude<DType, 'string'>, number> = { float32: 4, float64: 8, int32: 4, int64: 8, uint8: 1, bool: 1 }

export function tensorsToJson (tensors: Record<string, WireTensor>): Record<string, JsonTensor> {
  return Object.fromEntries(Object.entries(tensors).map(([k, t]) => {
    if (t.dtype === 'string') return [k, { dtype: 'string', shape: t.shape, data: [...t.data as string[]] }]
    const data = t.data as Exclude<WireTensor['data'], string[]>
    return [k, { dtype: t.dtype, shape: t.shape, b64: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') }]
  }))
}

const MAX_JSON_TENSORS = 64
const MAX_JSON_ELEMENTS = 16 * 1024 * 1024
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/** Tensors sent as JSON by another node, checked (names, dtypes, shapes, sizes, element types) before use. */
export function tensorsFromJson (value: unknown, root: string): Record<string, WireTensor> {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidInputError('must be an object of tensors by name', root)
  const entries = Object.entries(value)
  if (entries.length > MAX_JSON_TENSORS) throw new InvalidInputError(`at most ${MAX_JSON_TENSORS} tensors`, root)
  const out: Record<string, WireTensor> = {}
  for (const [name, t] of entries) {
    const field = `${root}.${name}`
    if (t == null || typeof t !== 'object') throw new InvalidInputError('must be {dtype, shape, b64} or {dtype: string, shape, data}', field)
    const { dtype, shape, data, b64 } = t as { dtype?: unknown, shape?: unknown, data?: unknown, b64?: unknown }
    if (typeof dtype !== 'string' || !(DTYPES as readonly string[]).includes(dtype)) throw new InvalidInputError(`dtype must be one of ${DTYPES.join(', ')}`, `${field}.dtype`)
    if (!Array.isArray(shape) || shape.length > 8 || shape.some(d => !Number.isSafeInteger(d) || d < 0)) throw new InvalidInputError('shape must be at most 8 sizes ≥ 0', `${field}.shape`)
    const n = shape.reduce((a: number, b: number) => a * b, 1)
    if (n > MAX_JSON_ELEMENTS || (shape[0] ?? 0) > MAX_INSTANCES * 1024) throw new InvalidInputError(`has ${n} elements; too many`, `${field}.shape`)
    if (dtype === 'string') {
      if (!Array.isArray(data) || data.length !== n || data.some(x => typeof x !== 'string')) throw new InvalidInputError(`data must hold ${n} strings`, `${field}.data`)
      out[name] = { dtype, shape, data: data as string[] }
      continue
    }
    const itemBytes = ITEM_BYTES[dtype as Exclude<DType, 'string'>]
    // the length is checked on the text, before a byte is decoded
    if (typeof b64 !== 'string' || b64.length !== Math.ceil(n * itemBytes / 3) * 4 || !BASE64.test(b64)) throw new InvalidInputError(`b64 must hold the ${n * itemBytes} bytes of ${n} ${dtype} values`, `${field}.b64`)
    const bytes = new Uint8Array(n * itemBytes)
    bytes.set(Buffer.from(b64, 'base64').subarray(0, bytes.byteLength))
    const typed = dtype === 'float32' ? new Float32Array(bytes.buffer) : dtype === 'float64' ? new Float64Array(bytes.buffer) : dtype === 'int32' ? new Int32Array(bytes.buffer) : dtype === 'int64' ? new BigInt64Array(bytes.buffer) : bytes
    if (dtype === 'bool' && bytes.some(x => x > 1)) throw new InvalidInputError('data holds a value that is not bool', `${field}.b64`)
    out[name] = { dtype: dtype as DType, shape, data: typed }
  }
  return out
}

/**
 * Answer a request for a model this node runs, in the form asked: TF
 * Serving's REST JSON (absent), typed tensors as JSON (`tensors`: body
 * `{inputs, output_filter?}`, answer `{model, version, outputs}`) or the
 * model's signature (`metadata`). What a forwarded request from another
 * node gets, and what the local APIs use.
 */
export async function answerLocal (runtime: Pick<Runtime, 'get'>, name: string, version: string | undefined, body: unknown, answer?: 'tensors' | 'metadata', requestId?: string): Promise<unknown> {
  if (answer === 'metadata') return metadataLocal(runtime, name, version)
  if (answer == null) return await predictLocal(runtime, name, version, body, requestId)
  if (body == null || typeof body !== 'object' || Array.isArray(body)) throw new InvalidInputError('must be {inputs, output_filter}', 'body')
  const { inputs, output_filter: filter } = body as { inputs?: unknown, output_filter?: unknown }
  if (filter != null && (!Array.isArray(filter) || filter.length > 64 || filter.some(f => typeof f !== 'string'))) throw new InvalidInputError('must be a list of output names', 'output_filter')
  const result = await predictTensorsLocal(runtime, name, version, tensorsFromJson(inputs, 'inputs'), (filter as string[] | undefined) ?? [], requestId)
  return { model: result.model, version: result.version, outputs: tensorsToJson(result.outputs) }
}
