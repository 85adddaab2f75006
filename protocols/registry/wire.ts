import { Type, type Static } from '@sinclair/typebox'

/** Longest registry key, in characters. */
export const MAX_KEY_LENGTH = 256
/** Largest JSON text of one registry value. */
export const MAX_VALUE_BYTES = 64 * 1024
/** Deepest nesting of arrays and objects in one registry value. */
export const MAX_VALUE_DEPTH = 32
/** Largest wall-clock part of a timestamp (ms): year 10889, far past any real clock. */
export const MAX_WALL_MS = 2 ** 48
/**
 * Largest logical counter of a timestamp. A clock that reaches it carries
 * into the wall-clock part instead of counting past it, so no honest stamp
 * ever fails this schema.
 */
export const MAX_COUNTER = 2 ** 31 - 1

/** `a/b/c` made of safe segments (letters, digits and `._:@=+-`), none of them `.` or `..`. */
export const KEY_PATTERN = '^(?!\\.\\.?(/|$))[A-Za-z0-9._:@=+-]+(/(?!\\.\\.?(/|$))[A-Za-z0-9._:@=+-]+)*$'

/** A libp2p peer id as text (base58btc). */
export const PEER_ID_PATTERN = '^[1-9A-HJ-NP-Za-km-z]+$'

/** hybrid logical clock: [wall clock ms, logical counter] */
export const TimestampSchema = Type.Tuple([
  Type.Integer({ minimum: 0, maximum: MAX_WALL_MS }),
  Type.Integer({ minimum: 0, maximum: MAX_COUNTER })
])

/**
 * One registry entry as it travels between peers and as it is stored.
 * The value travels as JSON text so the writer's signature covers exact bytes.
 */
export const WireEntrySchema = Type.Object({
  /** key, e.g. `node/12D3Koo…` */
  k: Type.String({ minLength: 1, maxLength: MAX_KEY_LENGTH, pattern: KEY_PATTERN }),
  /** JSON text of the value, or null for a tombstone */
  v: Type.Union([Type.String({ maxLength: MAX_VALUE_BYTES }), Type.Null()]),
  t: TimestampSchema,
  /** writer's peer id */
  w: Type.String({ minLength: 10, maxLength: 128, pattern: PEER_ID_PATTERN }),
  /** writer's Ed25519 signature, base64url */
  s: Type.String({ minLength: 10, maxLength: 256, pattern: '^[A-Za-z0-9_-]+$' }),
  /** fleet authorisation (compact JWS) for keys the writer does not own */
  a: Type.Optional(Type.String({ minLength: 10, maxLength: 16 * 1024 }))
}, { additionalProperties: false })

export type WireEntry = Static<typeof WireEntrySchema>
export type Timestamp = WireEntry['t']
