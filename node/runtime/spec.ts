import { Type, type Static } from '@sinclair/typebox'
import { compile, describeError } from '../../protocols/schema.ts'
import { ACTION_SCHEMAS, type ActionSpec } from '../actions/schema.ts'
import { parseDestination } from '../actions/sandbox/network.ts'
import { SENSOR_ID_PATTERN } from '../../sensors/schema.ts'
import { InstanceSpecError } from './errors.ts'

/**
 * What an instance does besides answering predict requests: where its input
 * comes from (sensor windows and their preprocessing), how requests are
 * batched, and its rules with their actions. The bundle's `config.json`
 * gives the defaults; `gatemesh run` may override parts of it.
 */

export const PreprocessSchema = Type.Object({
  /** scale: (x − min) / (max − min); standardize: (x − mean) / std; clip: into [min, max] */
  op: Type.Union([Type.Literal('scale'), Type.Literal('standardize'), Type.Literal('clip')]),
  min: Type.Optional(Type.Number()),
  max: Type.Optional(Type.Number()),
  mean: Type.Optional(Type.Number()),
  std: Type.Optional(Type.Number({ exclusiveMinimum: 0 }))
}, { additionalProperties: false })

export const InputSchema = Type.Object({
  /** sensor ids on this node; with several, each window step is [s1, s2, …]; none: predict requests only */
  sensors: Type.Array(Type.String({ pattern: SENSOR_ID_PATTERN }), { default: [], maxItems: 16 }),
  window: Type.Object({
    /** readings per window (the model's input length) */
    size: Type.Integer({ minimum: 1, maximum: 100_000 }),
    /** a time window: the last `ms` of readings, resampled to `size` evenly spaced points */
    ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400_000 })),
    /** predict every `stride` readings once the window is full */
    stride: Type.Integer({ minimum: 1, maximum: 100_000, default: 1 })
  }, { additionalProperties: false }),
  preprocess: Type.Array(PreprocessSchema, { default: [], maxItems: 16 })
}, { additionalProperties: false })

export const RuleSchema = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' }),
  /** condition over the prediction, e.g. `class == "anomaly" && score > 0.9` */
  when: Type.String({ minLength: 1, maxLength: 1024 }),
  cooldownMs: Type.Integer({ minimum: 0, maximum: 86_400_000, default: 0 }),
  debounce: Type.Integer({ minimum: 1, maximum: 10_000, default: 1 }),
  /** checked per type by `parseInstanceSpec` */
  actions: Type.Array(Type.Unsafe<ActionSpec>({ type: 'object' }), { minItems: 1, maxItems: 32 })
}, { additionalProperties: false })

export const InstanceSpecSchema = Type.Object({
  /** the name the model answers to under /v1/models/; the manifest's name by default */
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })),
  input: Type.Optional(InputSchema),
  batch: Type.Optional(Type.Object({
    maxSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
    maxDelayMs: Type.Optional(Type.Number({ minimum: 0, maximum: 1000 }))
  }, { additionalProperties: false })),
  workers: Type.Optional(Type.Integer({ minimum: 1, maximum: 32 })),
  rules: Type.Array(RuleSchema, { default: [], maxItems: 64 }),
  /** what the bundle's action script may do; from the bundle's own config.json only */
  script: Type.Optional(Type.Object({
    /** `host:port` (IPv6 as `[address]:port`) the script may connect to over TCP; nothing else is reachable */
    network: Type.Array(Type.String({ minLength: 3, maxLength: 300 }), { default: [], maxItems: 16 })
  }, { additionalProperties: false }))
}, { additionalProperties: false })

export type Preprocess = Static<typeof PreprocessSchema>
export type InputSpec = Static<typeof InputSchema>
export type RuleSpec = Static<typeof RuleSchema>
export type InstanceSpec = Static<typeof InstanceSpecSchema>

const validateSpec = compile(InstanceSpecSchema)

/** Validate an instance spec (filling defaults); every error names its field, e.g. `spec.rules[0].actions[1].to`. */
export function parseInstanceSpec (input: unknown, root = 'spec'): InstanceSpec {
  if (input == null || typeof input !== 'object' || Array.isArray(input)) throw new InstanceSpecError(`${root}: must be an object`, root)
  const spec = structuredClone(input)
  if (!validateSpec(spec)) {
    const { field, message } = describeError(root, validateSpec.errors)
    throw new InstanceSpecError(message, field)
  }
  spec.rules.forEach((rule, r) => {
    rule.actions.forEach((action, a) => {
      const field = `${root}.rules[${r}].actions[${a}]`
      const type = (action as { type?: unknown }).type
      const schema = typeof type === 'string' ? ACTION_SCHEMAS[type] : undefined
      if (schema == null) throw new InstanceSpecError(`${field}.type: must be one of ${Object.keys(ACTION_SCHEMAS).join(', ')}`, `${field}.type`)
      const validate = compile(schema)
      if (!validate(action)) {
        const err = describeError(field, validate.errors)
        throw new InstanceSpecError(err.message, err.field)
      }
    })
  })
  spec.script?.network.forEach((d, i) => {
    const parsed = parseDestination(d)
    if (typeof parsed === 'string') throw new InstanceSpecError(`${root}.script.network[${i}]: ${parsed}`, `${root}.script.network[${i}]`)
  })
  const names = new Set<string>()
  spec.rules.forEach((rule, r) => {
    if (names.has(rule.name)) throw new InstanceSpecError(`${root}.rules[${r}].name: "${rule.name}" is used twice`, `${root}.rules[${r}].name`)
    names.add(rule.name)
  })
  spec.input?.preprocess.forEach((p, i) => {
    const field = `${root}.input.preprocess[${i}]`
    const need = p.op === 'standardize' ? ['mean', 'std'] : ['min', 'max']
    for (const k of need) if ((p as Record<string, unknown>)[k] == null) throw new InstanceSpecError(`${field}.${k}: is required for ${p.op}`, `${field}.${k}`)
    if (p.op !== 'standardize' && p.max! <= p.min!) throw new InstanceSpecError(`${field}.max: must be greater than min`, `${field}.max`)
  })
  return spec
}

/** The bundle's defaults with the run request's overrides on top (input merged one level deep). */
export function mergeSpecs (defaults: unknown, overrides: Record<string, unknown>): Record<string, unknown> {
  const base = defaults != null && typeof defaults === 'object' && !Array.isArray(defaults) ? defaults as Record<string, unknown> : {}
  const merged: Record<string, unknown> = { ...base, ...overrides }
  if (overrides.input != null && base.input != null && typeof base.input === 'object') {
    merged.input = { ...base.input as object, ...overrides.input as object }
  }
  return merged
}
