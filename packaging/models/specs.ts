import { ModelSpecError } from '../bundle/errors.ts'
import type { TensorSpec } from '../manifest.ts'

/**
 * The specs a bundle carries: what the model declares, in the model's
 * order, with what the user gave on top (class labels, a free dimension
 * made fixed). A user spec must name the model's own inputs (or outputs),
 * with the same dtypes and ranks, and fixed dimensions the model agrees
 * with; every disagreement is a ModelSpecError naming the field, e.g.
 * `inputs[0].dtype`. The batch dimension may always be left free (`-1`):
 * fixed-batch models are fed slice by slice.
 *
 * With `byPosition` (TensorFlow.js, whose runner feeds tensors by position
 * and whose loaded names depend on what the process loaded before), the
 * user's specs pair with the model's in order and may rename them.
 */
export function reconcileSpecs (model: TensorSpec[], given: TensorSpec[] | undefined, field: 'inputs' | 'outputs', options: { byPosition?: boolean } = {}): TensorSpec[] {
  if (given == null) return model
  const what = field === 'inputs' ? 'input' : 'output'
  if (given.length !== model.length) {
    throw new ModelSpecError(`gives ${given.length} ${what}s; the model has ${model.length} (${model.map(describe).join('; ')})`, field)
  }
  const byName = new Map(given.map((s, i) => [s.name, { spec: s, i }]))
  if (options.byPosition !== true) {
    for (const [i, s] of given.entries()) {
      if (!model.some(m => m.name === s.name)) throw new ModelSpecError(`the model has no ${what} "${s.name}" (it has ${model.map(m => `"${m.name}"`).join(', ')})`, `${field}[${i}].name`)
    }
  }
  return model.map((m, position) => {
    const { spec, i } = options.byPosition === true ? { spec: given[position]!, i: position } : byName.get(m.name)!
    const at = `${field}[${i}]`
    if (spec.dtype !== m.dtype) throw new ModelSpecError(`is ${spec.dtype}; the model's ${what} ${m.name} is ${m.dtype}`, `${at}.dtype`)
    if (spec.shape.length !== m.shape.length) throw new ModelSpecError(`[${spec.shape.join(', ')}] has ${spec.shape.length} dimensions; the model's ${what} ${m.name} has ${m.shape.length}: [${m.shape.join(', ')}]`, `${at}.shape`)
    const shape = m.shape.map((d, k) => {
      const u = spec.shape[k]!
      if (d >= 0 && u >= 0 && d !== u && k > 0) throw new ModelSpecError(`dimension ${k} is ${u}; the model's ${what} ${m.name} has ${d}: [${m.shape.join(', ')}]`, `${at}.shape`)
      if (k === 0 && u === -1) return -1
      return d >= 0 ? d : u
    })
    return { ...m, name: spec.name, shape, ...(spec.labels == null ? {} : { labels: spec.labels }) }
  })
}

function describe (s: TensorSpec): string {
  return `${s.name} ${s.dtype} [${s.shape.join(', ')}]`
}
