import { Type, type Static } from '@sinclair/typebox'
import { compile } from '../../protocols/schema.ts'

/**
 * The values under `scheduler/<zone>/<peer>`. Each node owns its own key and
 * writes one of two things there: a claim on its zone's scheduler lease
 * (renewed while it holds it), or the scheduler it follows (its
 * endorsement). Endorsements are what make a claim established: a claim
 * the zone's members follow, which a stolen gateway cannot manufacture.
 */

/** Highest term any node accepts or issues. Honest terms grow by one per election, so this is never reached. */
export const MAX_TERM = 2 ** 31 - 1
/**
 * How far above the terms this node knows a peer's claim may go and still
 * be considered (see `admissible` in leader.ts): room for a partitioned side
 * that held a few elections of its own, and nothing like 2^53.
 */
export const TERM_STEP = 8
export const MIN_LEASE_MS = 200
export const MAX_LEASE_MS = 60_000

const PeerIdString = Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' })

export const ClaimSchema = Type.Object({
  term: Type.Integer({ minimum: 1, maximum: MAX_TERM }),
  /** how long after each renewal the lease holds, as its holder counts it */
  leaseMs: Type.Integer({ minimum: MIN_LEASE_MS, maximum: MAX_LEASE_MS }),
  /** wall-clock ms when the holder first claimed this term (informational) */
  since: Type.Integer({ minimum: 0, maximum: 2 ** 50 })
}, { additionalProperties: false })

export const EndorsementSchema = Type.Object({
  /** the scheduler this node follows */
  follows: PeerIdString,
  /** its term when this node started following it (informational: endorsements count by peer) */
  term: Type.Integer({ minimum: 1, maximum: MAX_TERM })
}, { additionalProperties: false })

export type SchedulerClaim = Static<typeof ClaimSchema>
export type Endorsement = Static<typeof EndorsementSchema>

export type ScheduleRecord =
  | { kind: 'claim', claim: SchedulerClaim }
  | { kind: 'endorsement', endorsement: Endorsement }

const isClaim = compile(ClaimSchema)
const isEndorsement = compile(EndorsementSchema)

/** Read a `scheduler/…` value from the registry; anything else (forged, garbage, an older format) is undefined. */
export function parseScheduleRecord (value: unknown): ScheduleRecord | undefined {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return undefined
  // the validators fill no defaults and coerce nothing, so checking the value itself is safe
  if ('follows' in value) return isEndorsement(value) ? { kind: 'endorsement', endorsement: value } : undefined
  return isClaim(value) ? { kind: 'claim', claim: value } : undefined
}

/** `scheduler/<zone>/<peer>` → its parts; undefined for any other shape. */
export function parseScheduleKey (key: string): { zone: string, peerId: string } | undefined {
  const parts = key.split('/')
  if (parts.length !== 3 || parts[0] !== 'scheduler' || parts[1] === '' || parts[2] === '') return undefined
  return { zone: parts[1]!, peerId: parts[2]! }
}
