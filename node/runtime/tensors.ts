import { InvalidInputError } from './errors.ts'
import { allocate, type TensorData, type WireTensor } from '../../packaging/models/tensor.ts'
import type { TensorSpec } from '../../packaging/manifest.ts'

/** One instance, checked: a flat typed array per model input, with its shape (batch dimension excluded). */
export interface CheckedInstance {
  values: TensorData[]
  shapes: number[][]
}

export type Nested = number | boolean | string | Nested[]

/** At most this many instances per request. */
export const MAX_INSTANCES = 4096

const isObject = (v: unknown): v is Record<string, unknown> => v != null && typeof v === 'object' && !Array.isArray(v)

/**
 * Read a TensorFlow Serving predict body — row form `{"instances": [...]}`
 * or columnar `{"inputs": ...}` — into instances checked against the
 * manifest's input spec. Every refusal is an InvalidInputError naming the
 * place, e.g. `instances[3][15]: expected a number`.
 */
export function parsePredictBody (body: unknown, specs: TensorSpec[]): { instances: CheckedInstance[], columnar: boolean } {
  if (!isObject(body)) throw new InvalidInputError('must be a JSON object with "instances" or "inputs"', 'body')
  for (const key of Object.keys(body)) {
    if (key !== 'instances' && key !== 'inputs' && key !== 'signature_name') throw new InvalidInputError('is not an allowed field', `body.${key}`)
  }
  if ((body.instances === undefined) === (body.inputs === undefined)) throw new InvalidInputError('give exactly one of "instances" (row form) or "inputs" (columnar form)', 'body')
  const names = specs.map(s => s.name)
  if (body.instances !== undefined) {
    const rows = body.instances
    if (!Array.isArray(rows) || rows.length === 0) throw new InvalidInputError('must be a non-empty array', 'instances')
    if (rows.length > MAX_INSTANCES) throw new InvalidInputError(`at most ${MAX_INSTANCES} instances per request`, 'instances')
    return {
      columnar: false,
      instances: rows.map((row, i) => {
        const field = `instances[${i}]`
        // a single input may come bare; an object is always inputs by name
        if (specs.length === 1 && !isObject(row)) return checkInstance([row], specs, [field])
        if (!isObject(row)) throw new InvalidInputError(`must be an object with the inputs ${names.join(', ')}`, field)
        return checkInstance(namedValues(row, names, field), specs, names.map(n => `${field}.${n}`))
      })
    }
  }
  const inputs = body.inputs
  const bare = specs.length === 1 && !isObject(inputs)
  const columns: unknown[] = bare ? [inputs] : namedValues(inputs, names, 'inputs')
  const fields = bare ? ['inputs'] : names.map(n => `inputs.${n}`)
  let batch = -1
  columns.forEach((col, k) => {
    if (!Array.isArray(col) || col.length === 0) throw new InvalidInputError('must be a non-empty array (batch first)', fields[k]!)
    if (batch >= 0 && col.length !== batch) throw new InvalidInputError(`has ${col.length} rows, another input has ${batch}`, fields[k]!)
    batch = col.length
  })
  if (batch > MAX_INSTANCES) throw new InvalidInputError(`at most ${MAX_INSTANCES} instances per request`, fields[0]!)
  return {
    columnar: true,
    instances: Array.from({ length: batch }, (_, i) => checkInstance(columns.map(c => (c as unknown[])[i]), specs, fields.map(f => `${f}[${i}]`)))
  }
}

function namedValues (obj: unknown, names: string[], field: string): unknown[] {
  if (!isObject(obj)) throw new InvalidInputError(`must be an object with the inputs ${names.join(', ')}`, field)
  for (const key of Object.keys(obj)) if (!names.includes(key)) throw new InvalidInputError(`is not an input of this model (its inputs: ${names.join(', ')})`, `${field}.${key}`)
  return names.map(n => {
    if (!(n in obj)) throw new InvalidInputError('is required', `${field}.${n}`)
    return obj[n]
  })
}

/** Check one instance (a value per input) against the specs. */
export function checkInstance (values: unknown[], specs: TensorSpec[], fields: string[]): CheckedInstance {
  const out: CheckedInstance = { values: [], shapes: [] }
  specs.forEach((spec, k) => {
    const field = fields[k]!
    const want = spec.shape.slice(1)
    const flat: unknown[] = []
    const shape: number[] = []
    walk(values[k], want, 0, field, flat, shape, spec.dtype)
    out.values.push(toTyped(flat, spec.dtype, field))
    out.shapes.push(shape)
  })
  return out
}

const LEAF: Record<TensorSpec['dtype'], string> = {
  float32: 'a finite number',
  float64: 'a finite number',
  int32: 'an integer',
  int64: 'an integer',
  uint8: 'an integer',
  bool: 'true, false, 0 or 1',
  string: 'a string'
}

function leafOk (v: unknown, dtype: TensorSpec['dtype']): boolean {
  if (dtype === 'string') return typeof v === 'string'
  if (dtype === 'bool') return typeof v === 'boolean' || v === 0 || v === 1
  return (typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean'
}

function walk (v: unknown, want: number[], depth: number, field: string, flat: unknown[], shape: number[], dtype: TensorSpec['dtype']): void {
  if (depth === want.length) {
    if (Array.isArray(v)) throw new InvalidInputError(`expected a scalar, got an array (the input has ${want.length} dimensions per instance)`, field)
    if (leafOk(v, dtype)) {
      flat.push(v)
      return
    }
    throw new InvalidInputError(`expected ${LEAF[dtype]} (${dtype}), got ${JSON.stringify(v)?.slice(0, 40) ?? String(v)}`, field)
  }
  if (!Array.isArray(v)) throw new InvalidInputError(`expected an array of ${want[depth]! < 0 ? 'any length' : want[depth]} (dimension ${depth + 1} of [${want.join(', ')}])`, field)
  const d = want[depth]!
  if (d >= 0 && v.length !== d) throw new InvalidInputError(`expected ${d} values, got ${v.length}`, field)
  if (shape.length === depth) shape.push(v.length)
  else if (shape[depth] !== v.length) throw new InvalidInputError(`ragged array: expected ${shape[depth]} values, got ${v.length}`, field)
  v.forEach((x, i) => { walk(x, want, depth + 1, `${field}[${i}]`, flat, shape, dtype) })
}

const INT_RANGE: Partial<Record<TensorSpec['dtype'], [number, number]>> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint8: [0, 255]
}

function toTyped (flat: unknown[], dtype: TensorSpec['dtype'], field: string): TensorData {
  if (dtype === 'string') return flat as string[]
  if (dtype === 'bool') return Uint8Array.from(flat, x => (x === true || x === 1) ? 1 : 0)
  if (flat.some(x => typeof x !== 'number')) throw new InvalidInputError(`expected numbers for a ${dtype} input`, field)
  const numbers = flat as number[]
  const range = INT_RANGE[dtype]
  if (range != null) {
    const bad = numbers.findIndex(x => !Number.isInteger(x) || x < range[0] || x > range[1])
    if (bad >= 0) throw new InvalidInputError(`expected integers in [${range[0]}, ${range[1]}] for a ${dtype} input, got ${numbers[bad]}`, field)
  }
  switch (dtype) {
    case 'int32': return Int32Array.from(numbers)
    case 'int64': return BigInt64Array.from(numbers, x => BigInt(x))
    case 'uint8': return Uint8Array.from(numbers)
    case 'float64': return Float64Array.from(numbers)
    default: return Float32Array.from(numbers)
  }
}

/** Join instances into one batch tensor per input (they must share shapes: the batcher groups by `shapeKey`). */
export function toBatch (instances: CheckedInstance[], specs: TensorSpec[]): WireTensor[] {
  return specs.map((spec, k) => {
    const per = instances[0]!.values[k]!.length
    const data = allocate(spec.dtype, per * instances.length)
    instances.forEach((inst, i) => {
      const values = inst.values[k]!
      if (Array.isArray(data)) (values as string[]).forEach((v, j) => { data[i * per + j] = v })
      else (data as Uint8Array).set(values as Uint8Array, i * per)
    })
    return { dtype: spec.dtype, shape: [instances.length, ...instances[0]!.shapes[k]!], data }
  })
}

export function shapeKey (inst: CheckedInstance): string {
  return inst.shapes.map(s => s.join('x')).join('|')
}

/** Row `i` of a batch output as nested arrays (int64 as numbers, as TF Serving writes them in JSON). */
export function rowOf (t: WireTensor, i: number): Nested {
  const rest = t.shape.slice(1)
  const per = rest.reduce((a, b) => a * b, 1)
  const slice = t.data.slice(i * per, (i + 1) * per) as ArrayLike<number | bigint | string>
  const flat = Array.from(slice, (x): number | boolean | string => typeof x === 'bigint' ? Number(x) : t.dtype === 'bool' ? x !== 0 : x as number | string)
  return nest(flat, rest)
}

function nest (flat: Array<number | boolean | string>, shape: number[]): Nested {
  if (shape.length === 0) return flat[0]!
  if (shape.length === 1) return flat
  const [d, ...rest] = shape
  const per = rest.reduce((a, b) => a * b, 1)
  return Array.from({ length: d! }, (_, i) => nest(flat.slice(i * per, (i + 1) * per), rest))
}

/**
 * Batch-first tensors by input name (a gRPC PredictRequest's inputs) as
 * checked instances: the names must be the model's inputs, ranks and fixed
 * dimensions must match its specs, and every input must have the same
 * batch. Numbers convert to the model's dtype where every value fits (a
 * DT_DOUBLE tensor feeds a float32 input; 2.5 does not feed an int32 one).
 * Errors name the input, e.g. `inputs.readings.tensor_shape`.
 */
export function instancesFromTensors (inputs: Record<string, WireTensor>, specs: TensorSpec[], root = 'inputs'): CheckedInstance[] {
  const names = specs.map(s => s.name)
  for (const key of Object.keys(inputs)) {
    if (!names.includes(key)) throw new InvalidInputError(`is not an input of this model (its inputs: ${names.join(', ')})`, `${root}.${key}`)
  }
  let batch = -1
  const columns = specs.map(spec => {
    const field = `${root}.${spec.name}`
    const t = inputs[spec.name]
    if (t == null) throw new InvalidInputError('is required', field)
    if (t.shape.length !== spec.shape.length) throw new InvalidInputError(`has shape [${t.shape.join(', ')}]; the model takes [${spec.shape.join(', ')}] (batch first)`, `${field}.tensor_shape`)
    spec.shape.forEach((d, k) => {
      if (k > 0 && d >= 0 && t.shape[k] !== d) throw new InvalidInputError(`has shape [${t.shape.join(', ')}]; the model takes [${spec.shape.join(', ')}] (batch first)`, `${field}.tensor_shape`)
    })
    const rows = t.shape[0]!
    if (rows === 0) throw new InvalidInputError('has an empty batch', `${field}.tensor_shape`)
    if (batch >= 0 && rows !== batch) throw new InvalidInputError(`has a batch of ${rows}; another input has ${batch}`, `${field}.tensor_shape`)
    batch = rows
    return { spec, field, t: convert(t, spec.dtype, field) }
  })
  if (batch > MAX_INSTANCES) throw new InvalidInputError(`at most ${MAX_INSTANCES} instances per request`, `${root}.${names[0]}.tensor_shape`)
  return Array.from({ length: batch }, (_, i) => {
    const inst: CheckedInstance = { values: [], shapes: [] }
    for (const { t } of columns) {
      const rest = t.shape.slice(1)
      const per = rest.reduce((a, b) => a * b, 1)
      inst.values.push(t.data.slice(i * per, (i + 1) * per) as TensorData)
      inst.shapes.push(rest)
    }
    return inst
  })
}

function convert (t: WireTensor, dtype: TensorSpec['dtype'], field: string): WireTensor {
  if (t.dtype === dtype) return t
  if (t.dtype === 'string' || dtype === 'string') throw new InvalidInputError(`is ${t.dtype}; the model takes ${dtype}`, `${field}.dtype`)
  const values = Array.from(t.data as ArrayLike<number | bigint>, x => Number(x))
  return { dtype, shape: t.shape, data: toTyped(dtype === 'bool' ? values.map(v => v === 0 ? 0 : v === 1 ? 1 : v) : values, dtype, field) }
}

/** Rows of one output, stacked back into a batch-first tensor. */
export function stackRows (rows: Nested[], dtype: TensorSpec['dtype']): WireTensor {
  const shape: number[] = [rows.length]
  let probe: Nested = rows[0]!
  while (Array.isArray(probe)) {
    shape.push(probe.length)
    probe = probe[0]!
  }
  const flat = (rows as unknown[]).flat(shape.length) as Array<number | boolean | string>
  const data = allocate(dtype, flat.length)
  flat.forEach((v, i) => {
    if (Array.isArray(data)) data[i] = String(v)
    else if (data instanceof BigInt64Array) data[i] = BigInt(v as number)
    else (data as Float32Array)[i] = v === true ? 1 : v === false ? 0 : v as number
  })
  return { dtype, shape, data }
}
