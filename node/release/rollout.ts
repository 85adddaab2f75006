import { Type, type Static } from '@sinclair/typebox'
import { compile, describeError } from '../../protocols/schema.ts'
import { ARCHES } from '../../packaging/image/arch.ts'
import { RELEASE_VERSION_PATTERN } from '../../packaging/image/layout.ts'
import { LabelsSchema } from '../config/schema.ts'
import { RolloutSpecError } from './errors.ts'

const Slug = Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })

export const ROLLOUT_STATES = ['active', 'paused', 'aborted'] as const
export type RolloutState = typeof ROLLOUT_STATES[number]

/** Rollout defaults, as `gatemesh rollout create` documents them. */
export const DEFAULT_WAVES = [100]
export const DEFAULT_HEALTH_DEADLINE_SEC = 300

/**
 * A rollout: which agent release every matching node moves to, in waves.
 * Written to `rollout/<id>` with a fleet (or fleet-certified publisher)
 * signature, like a deployment; pause, resume and abort rewrite it signed.
 * Nothing else is written centrally: each node works out its own wave and
 * reports its progress under `release/<peer>`.
 */
export const RolloutSpecSchema = Type.Object({
  id: Slug,
  description: Type.Optional(Type.String({ maxLength: 512 })),
  /** one release bundle per CPU, all of one version */
  releases: Type.Array(Type.Object({
    arch: Type.Union(ARCHES.map(a => Type.Literal(a))),
    version: Type.String({ pattern: RELEASE_VERSION_PATTERN, maxLength: 64 }),
    digest: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    size: Type.Integer({ minimum: 1 })
  }, { additionalProperties: false }), { minItems: 1, maxItems: ARCHES.length }),
  /** cumulative share of the targets each wave brings to the release, in percent; the last is 100 */
  waves: Type.Array(Type.Number({ exclusiveMinimum: 0, maximum: 100 }), { minItems: 1, maxItems: 10, default: DEFAULT_WAVES }),
  /** only nodes whose certificate carries all these labels */
  labels: Type.Optional(LabelsSchema),
  /** the rollout halts once more nodes than this failed (rolled back or could not install) */
  maxFailures: Type.Integer({ minimum: 0, maximum: 100_000, default: 0 }),
  /** seconds between a wave becoming healthy and the next one starting */
  waveWaitSec: Type.Integer({ minimum: 0, maximum: 7 * 86400, default: 0 }),
  /** seconds a node's new release has to pass its health check before the node goes back */
  healthDeadlineSec: Type.Integer({ minimum: 10, maximum: 3600, default: DEFAULT_HEALTH_DEADLINE_SEC }),
  /** let nodes that run a newer release go back to this one */
  allowDowngrade: Type.Boolean({ default: false }),
  state: Type.Union(ROLLOUT_STATES.map(s => Type.Literal(s)), { default: 'active' }),
  /** ISO time; the newest rollout that names a node is the one it follows */
  createdAt: Type.String({ minLength: 10, maxLength: 40 }),
  createdBy: Type.Optional(Type.String({ maxLength: 128 }))
}, { additionalProperties: false })

export type RolloutSpec = Static<typeof RolloutSpecSchema>

export const rolloutKey = (id: string): string => `rollout/${id}`
export const releaseKey = (peer: string): string => `release/${peer}`

const validate = compile(RolloutSpecSchema)

/** Validate a rollout record, filling defaults; errors name the field (`rollout.waves`). */
export function parseRolloutSpec (input: unknown, root = 'rollout'): RolloutSpec {
  if (input == null || typeof input !== 'object' || Array.isArray(input)) throw new RolloutSpecError(`${root}: must be an object`, root)
  const spec = structuredClone(input)
  if (!validate(spec)) {
    const { field, message } = describeError(root, validate.errors)
    throw new RolloutSpecError(message, field)
  }
  spec.waves.forEach((w, i) => {
    if (i > 0 && w <= spec.waves[i - 1]!) throw new RolloutSpecError(`${root}.waves[${i}]: ${w}% must be more than the wave before (${spec.waves[i - 1]!}%)`, `${root}.waves[${i}]`)
  })
  if (spec.waves.at(-1) !== 100) throw new RolloutSpecError(`${root}.waves: the last wave must reach 100%, not ${spec.waves.at(-1)!}%`, `${root}.waves`)
  const arches = new Set<string>()
  spec.releases.forEach((r, i) => {
    if (arches.has(r.arch)) throw new RolloutSpecError(`${root}.releases[${i}].arch: a second release for ${r.arch}`, `${root}.releases[${i}].arch`)
    arches.add(r.arch)
    if (r.version !== spec.releases[0]!.version) throw new RolloutSpecError(`${root}.releases[${i}].version: ${r.version} differs from ${spec.releases[0]!.version}; one rollout moves every CPU to one version`, `${root}.releases[${i}].version`)
  })
  if (Number.isNaN(Date.parse(spec.createdAt))) throw new RolloutSpecError(`${root}.createdAt: not an ISO time`, `${root}.createdAt`)
  return spec
}

/** `5%,25%,100%` or `5,25,100` → [5, 25, 100]. */
export function parseWaves (text: string): number[] {
  const waves = text.split(',').map(s => s.trim()).filter(s => s !== '').map(s => {
    const n = Number(s.replace(/%$/, ''))
    if (!Number.isFinite(n)) throw new RolloutSpecError(`--waves: "${s}" is not a percentage`, '--waves')
    return n
  })
  if (waves.length === 0) throw new RolloutSpecError('--waves: no waves given', '--waves')
  return waves
}

export interface NewRolloutInit {
  releases: RolloutSpec['releases']
  /** @default [100] */
  waves?: number[]
  labels?: Record<string, string>
  maxFailures?: number
  waveWaitSec?: number
  healthDeadlineSec?: number
  allowDowngrade?: boolean
  description?: string
  createdBy?: string
  /** @default `<version>-<time>`, made a valid id */
  id?: string
  /** @default new Date() */
  now?: Date
}

/** A new rollout record, checked as every agent will check it (`gatemesh rollout create`, the coordinator). */
export function newRolloutSpec (init: NewRolloutInit, root = 'rollout'): RolloutSpec {
  const now = init.now ?? new Date()
  const version = init.releases[0]?.version ?? ''
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '').toLowerCase()
  const id = init.id ?? `${version.toLowerCase().replace(/[^a-z0-9._-]/g, '-')}-${stamp}`.replace(/^[^a-z0-9]+/, '').slice(0, 64)
  return parseRolloutSpec({
    id,
    ...(init.description == null ? {} : { description: init.description }),
    releases: init.releases,
    waves: init.waves ?? DEFAULT_WAVES,
    ...(init.labels == null || Object.keys(init.labels).length === 0 ? {} : { labels: init.labels }),
    maxFailures: init.maxFailures ?? 0,
    waveWaitSec: init.waveWaitSec ?? 0,
    healthDeadlineSec: init.healthDeadlineSec ?? DEFAULT_HEALTH_DEADLINE_SEC,
    allowDowngrade: init.allowDowngrade ?? false,
    state: 'active',
    createdAt: now.toISOString(),
    ...(init.createdBy == null ? {} : { createdBy: init.createdBy })
  }, root)
}
