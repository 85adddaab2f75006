import { Type, type Static } from '@sinclair/typebox'
import { compile } from '../../protocols/schema.ts'

export const RELEASE_STATES = ['idle', 'downloading', 'installing', 'restarting', 'verifying', 'healthy', 'rolled-back', 'failed', 'skipped'] as const
export type ReleaseState = typeof RELEASE_STATES[number]

const Text = (max: number): ReturnType<typeof Type.String> => Type.String({ maxLength: max })

/**
 * What `release/<peer>` holds, written by that node alone: the release it
 * runs, whether it can take releases at all, and where it stands in the
 * rollout it follows. Every node reads every other's to work out the
 * waves, so the record is all a rollout needs besides its own.
 */
export const ReleaseRecordSchema = Type.Object({
  /** the release it runs */
  version: Text(64),
  /** sha256 of the release bundle it was installed from; null for the release its image brought */
  digest: Type.Union([Type.String({ pattern: '^[0-9a-f]{64}$' }), Type.Null()]),
  arch: Text(16),
  /** the Node version it runs on */
  node: Text(32),
  /** started by the image's loader, which can switch releases and roll back: only such nodes take releases */
  managed: Type.Boolean(),
  /** why not managed */
  reason: Type.Optional(Text(400)),
  /** the release the loader goes back to */
  previous: Type.Optional(Text(64)),
  state: Type.Union(RELEASE_STATES.map(s => Type.Literal(s))),
  /** the rollout `state` is about */
  rollout: Type.Optional(Text(64)),
  /** the version that rollout moves it to */
  target: Type.Optional(Text(64)),
  /** why it failed, rolled back or skipped; what it is doing otherwise */
  detail: Type.Optional(Text(600)),
  /** wall-clock ms when `state` was entered */
  at: Type.Number(),
  /** when it passed its health check on `version` (ms) */
  healthyAt: Type.Optional(Type.Number()),
  startedAt: Type.Number()
}, { additionalProperties: false })

export type ReleaseRecord = Static<typeof ReleaseRecordSchema>

const validate = compile(ReleaseRecordSchema)

/** A record as another node wrote it: used only when it has exactly this shape. */
export function asReleaseRecord (value: unknown): ReleaseRecord | undefined {
  return validate(value) ? value : undefined
}
