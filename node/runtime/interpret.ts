import type { TensorSpec } from '../../packaging/manifest.ts'
import type { Nested } from './tensors.ts'

/** What rules see of one prediction. */
export interface Interpretation {
  /** the first output's row */
  output: Nested
  /** every output by name, when the model has several */
  outputs?: Record<string, Nested>
  /** classifiers (an output with labels): the top label, its score, and every label's score */
  class?: string
  score?: number
  scores?: Record<string, number>
  /** single-number outputs */
  value?: number
}

/**
 * Name the parts of a prediction so rules can say `class == "anomaly" &&
 * score > 0.9` or `value > 30` instead of indexing arrays.
 */
export function interpret (rows: Nested[], specs: TensorSpec[]): Interpretation {
  const out: Interpretation = { output: rows[0]! }
  if (rows.length > 1) out.outputs = Object.fromEntries(specs.map((s, i) => [s.name, rows[i]!]))
  const labelled = specs.findIndex(s => s.labels != null && s.labels.length > 0)
  if (labelled >= 0) {
    const labels = specs[labelled]!.labels!
    const flat = [rows[labelled]!].flat(8) as number[]
    if (flat.length === labels.length) {
      let best = 0
      flat.forEach((v, i) => { if (v > flat[best]!) best = i })
      out.class = labels[best]!
      out.score = flat[best]!
      out.scores = Object.fromEntries(labels.map((l, i) => [l, flat[i]!]))
    }
  }
  const first = [rows[0]!].flat(8)
  if (first.length === 1 && typeof first[0] === 'number') out.value = first[0]
  return out
}
