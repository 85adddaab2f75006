import { InvalidInputError } from './errors.ts'
import type { TensorSpec } from '../../packaging/manifest.ts'
import type { TensorData, WireTensor } from './wire.ts'

/** One instance, checked: a flat typed array per model input, with its shape (batch dimension excluded). */
export interface CheckedInstance {
  values: TensorData[]
  shapes: number[][]
}

export type Nested = number | boolean | Nested[]

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
        if (specs.length === 1 && !(isObject(row) && names[0]! in row)) return checkInstance([row], specs, [field])
        if (!isObject(row)) throw new InvalidInputError(`must be an object with the inputs ${names.join(', ')}`, field)
        return checkInstance(namedValues(row, names, field), specs, names.map(n => `${field}.${n}`))
      })
    }
  }
  const inputs = body.inputs
  const columns: unknown[] = specs.length === 1 && !(isObject(inputs) && names[0]! in inputs) ? [inputs] : namedValues(inputs, names, 'inputs')
  const fields = specs.length === 1 && columns[0] === inputs ? ['inputs'] : names.map(n => `inputs.${n}`)
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
  for (const key of Object.keys(obj)) if (!names.includes(key)) throw new InvalidInputError('is not an input of this model', `${field}.${key}`)
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
    if (spec.dtype === 'string') throw new InvalidInputError('string inputs are not supported by this runtime', field)
    const want = spec.shape.slice(1)
    const flat: Array<number | boolean> = []
    const shape: number[] = []
    walk(values[k], want, 0, field, flat, shape)
    out.values.push(toTyped(flat, spec.dtype, field))
    out.shapes.push(shape)
  })
  return out
}

function walk (v: unknown, want: number[], depth: number, field: string, flat: Array<number | boolean>, shape: number[]): void {
  if (depth === want.length) {
    if (Array.isArray(v)) throw new InvalidInputError(`expected a scalar, got an array (the input has ${want.length} dimensions per instance)`, field)
    if (typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) {
      flat.push(v)
      return
    }
    throw new InvalidInputError(`expected a finite number, got ${JSON.stringify(v) ?? String(v)}`, field)
  }
  if (!Array.isArray(v)) throw new InvalidInputError(`expected an array of ${want[depth]! < 0 ? 'any length' : want[depth]} (dimension ${depth + 1} of [${want.join(', ')}])`, field)
  const d = want[depth]!
  if (d >= 0 && v.length !== d) throw new InvalidInputError(`expected ${d} values, got ${v.length}`, field)
  if (shape.length === depth) shape.push(v.length)
  else if (shape[depth] !== v.length) throw new InvalidInputError(`ragged array: expected ${shape[depth]} values, got ${v.length}`, field)
  v.forEach((x, i) => { walk(x, want, depth + 1, `${field}[${i}]`, flat, shape) })
}

function toTyped (flat: Array<number | boolean>, dtype: TensorSpec['dtype'], field: string): TensorData {
  if (dtype === 'bool') return Uint8Array.from(flat, x => (x === true || x === 1) ? 1 : 0)
  if (flat.some(x => typeof x !== 'number')) throw new InvalidInputError(`expected numbers for a ${dtype} input`, field)
  if (dtype === 'int32') {
    if (flat.some(x => !Number.isInteger(x))) throw new InvalidInputError('expected integers for an int32 input', field)
    return Int32Array.from(flat as number[])
  }
  return Float32Array.from(flat as number[])
}

/** Join instances into one batch tensor per input (they must share shapes: the batcher groups by `shapeKey`). */
export function toBatch (instances: CheckedInstance[], specs: TensorSpec[]): WireTensor[] {
  return specs.map((spec, k) => {
    const first = instances[0]!.values[k]!
    const per = first.length
    const Ctor = first.constructor as new (n: number) => TensorData
    const data = new Ctor(per * instances.length)
    instances.forEach((inst, i) => { data.set(inst.values[k]! as any, i * per) })
    const dtype = spec.dtype === 'string' ? 'float32' : spec.dtype
    return { dtype, shape: [instances.length, ...instances[0]!.shapes[k]!], data }
  })
}

export function shapeKey (inst: CheckedInstance): string {
  return inst.shapes.map(s => s.join('x')).join('|')
}

/** Row `i` of a batch output as nested arrays. */
export function rowOf (t: WireTensor, i: number): Nested {
  const rest = t.shape.slice(1)
  const per = rest.reduce((a, b) => a * b, 1)
  const flat = Array.from(t.data.subarray(i * per, (i + 1) * per), x => t.dtype === 'bool' ? x !== 0 : x)
  return nest(flat, rest)
}

function nest (flat: Array<number | boolean>, shape: number[]): Nested {
  if (shape.length === 0) return flat[0]!
  if (shape.length === 1) return flat
  const [d, ...rest] = shape
  const per = rest.reduce((a, b) => a * b, 1)
  return Array.from({ length: d! }, (_, i) => nest(flat.slice(i * per, (i + 1) * per), rest))
}
