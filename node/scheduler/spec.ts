import { Type, type Static } from '@sinclair/typebox'
import { Cron } from 'croner'
import { compile, describeError } from '../../protocols/schema.ts'
import { LabelsSchema } from '../config/schema.ts'
import { DeploymentSpecError } from './errors.ts'

const Slug = Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })
const PeerIdString = Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' })
const IsoTime = Type.String({ minLength: 10, maxLength: 40 })

export const POLICIES = ['least-loaded', 'spread', 'pinned'] as const

/**
 * A deployment: which signed model runs where, when, how many times, and
 * what its instances do with their predictions (`instance`, the runtime's
 * instance spec: input, rules, actions). Written to `deployment/<id>` with a
 * fleet (or fleet-certified publisher) signature.
 */
export const DeploymentSpecSchema = Type.Object({
  id: Slug,
  description: Type.Optional(Type.String({ maxLength: 512 })),
  /** the bundle: by digest, or by manifest name and version */
  model: Type.Object({
    name: Slug,
    version: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    digest: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$' }))
  }, { additionalProperties: false }),
  replicas: Type.Integer({ minimum: 1, maximum: 1000, default: 1 }),
  placement: Type.Object({
    role: Type.Optional(Type.Union([Type.Literal('gateway'), Type.Literal('server')])),
    /** candidate node peer ids (in order of preference for `pinned`) */
    nodes: Type.Optional(Type.Array(PeerIdString, { maxItems: 1000 })),
    labels: Type.Optional(LabelsSchema),
    /** the node must have a sensor of each of these types */
    sensorTypes: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 16 })),
    policy: Type.Union(POLICIES.map(p => Type.Literal(p)), { default: 'least-loaded' })
  }, { additionalProperties: false, default: {} }),
  /** run only between these ISO times */
  window: Type.Optional(Type.Object({ start: IsoTime, end: IsoTime }, { additionalProperties: false })),
  /** run `durationSec` from each occurrence of a cron pattern */
  schedule: Type.Optional(Type.Object({
    cron: Type.String({ minLength: 9, maxLength: 128 }),
    durationSec: Type.Integer({ minimum: 1, maximum: 366 * 86400 }),
    timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64 }))
  }, { additionalProperties: false })),
  autoscale: Type.Optional(Type.Object({
    cpuHighPct: Type.Number({ exclusiveMinimum: 0, maximum: 100 }),
    cpuLowPct: Type.Number({ minimum: 0, exclusiveMaximum: 100 }),
    minReplicas: Type.Integer({ minimum: 1, maximum: 1000, default: 1 }),
    maxReplicas: Type.Integer({ minimum: 1, maximum: 1000 }),
    /** no second change within this long after one */
    cooldownSec: Type.Integer({ minimum: 0, maximum: 86400, default: 60 }),
    /** the average must stay past a threshold this long before a change */
    sustainSec: Type.Integer({ minimum: 0, maximum: 3600, default: 10 })
  }, { additionalProperties: false })),
  /**
   * When the model version changes: first run the new version on a few
   * replicas for `durationSec` beside the old ones (give `replicas` or
   * `percent`, not both), then update the rest one by one.
   */
  canary: Type.Optional(Type.Object({
    replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    percent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    durationSec: Type.Integer({ minimum: 0, maximum: 7 * 86400, default: 60 })
  }, { additionalProperties: false })),
  /** How a model update is judged; past a limit it is rolled back to the previous version. */
  update: Type.Optional(Type.Object({
    /** rolled back when the new version's predict errors pass this share of its predicts */
    maxErrorPct: Type.Number({ minimum: 0, maximum: 100, default: 5 }),
    /** … once it answered at least this many */
    minPredicts: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 20 }),
    /** rolled back when a new instance is not AVAILABLE this long after its step began */
    availableTimeoutSec: Type.Integer({ minimum: 5, maximum: 86400, default: 300 })
  }, { additionalProperties: false })),
  /** the runtime's instance spec (input, batching, rules and actions), over the bundle's defaults */
  instance: Type.Record(Type.String(), Type.Unknown(), { default: {} })
}, { additionalProperties: false })

export type DeploymentSpec = Static<typeof DeploymentSpecSchema>

const validate = compile(DeploymentSpecSchema)

export interface ParseOptions {
  /** Validate `instance` with the runtime's schema; throws an error with a `field`. */
  validateInstance?: (instance: unknown, root: string) => void
}

/** Validate a deployment spec, filling defaults; errors name the field (`deployment.window.end`). */
export function parseDeploymentSpec (input: unknown, options: ParseOptions = {}): DeploymentSpec {
  const root = 'deployment'
  if (input == null || typeof input !== 'object' || Array.isArray(input)) throw new DeploymentSpecError(`${root}: must be an object`, root)
  const spec = structuredClone(input)
  if (!validate(spec)) {
    const { field, message } = describeError(root, validate.errors)
    throw new DeploymentSpecError(message, field)
  }
  if (spec.model.version == null && spec.model.digest == null) {
    throw new DeploymentSpecError(`${root}.model: needs a version or a digest`, `${root}.model`)
  }
  if (spec.window != null) {
    const start = Date.parse(spec.window.start)
    const end = Date.parse(spec.window.end)
    if (Number.isNaN(start)) throw new DeploymentSpecError(`${root}.window.start: "${spec.window.start}" is not an ISO time`, `${root}.window.start`)
    if (Number.isNaN(end)) throw new DeploymentSpecError(`${root}.window.end: "${spec.window.end}" is not an ISO time`, `${root}.window.end`)
    if (end <= start) throw new DeploymentSpecError(`${root}.window.end: must be after start`, `${root}.window.end`)
  }
  if (spec.window != null && spec.schedule != null) throw new DeploymentSpecError(`${root}.schedule: give a window or a schedule, not both`, `${root}.schedule`)
  if (spec.schedule != null) {
    try {
      // croner validates both the pattern and the time zone; without a callback it schedules nothing
      const cron = new Cron(spec.schedule.cron, spec.schedule.timezone == null ? {} : { timezone: spec.schedule.timezone })
      cron.nextRun()
    } catch (err: any) {
      throw new DeploymentSpecError(`${root}.schedule.cron: ${err.message}`, `${root}.schedule.cron`)
    }
  }
  const a = spec.autoscale
  if (a != null) {
    if (a.cpuLowPct >= a.cpuHighPct) throw new DeploymentSpecError(`${root}.autoscale.cpuLowPct: must be below cpuHighPct`, `${root}.autoscale.cpuLowPct`)
    if (a.maxReplicas < a.minReplicas) throw new DeploymentSpecError(`${root}.autoscale.maxReplicas: must be at least minReplicas`, `${root}.autoscale.maxReplicas`)
  }
  const c = spec.canary
  if (c != null && (c.replicas == null) === (c.percent == null)) {
    throw new DeploymentSpecError(`${root}.canary: give replicas or percent (exactly one)`, `${root}.canary`)
  }
  if (spec.placement.policy === 'pinned' && (spec.placement.nodes ?? []).length === 0) {
    throw new DeploymentSpecError(`${root}.placement.nodes: a pinned deployment names its nodes`, `${root}.placement.nodes`)
  }
  options.validateInstance?.(spec.instance, `${root}.instance`)
  return spec
}
