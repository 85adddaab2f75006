import { Type, type Static } from '@sinclair/typebox'

/** Longest registry key, in characters. */
export const MAX_KEY_LENGTH = 256
/** Largest JSON text of one registry value. */
export const MAX_VALUE_BYTES = 64 * 1024

/** `a/b/c` made of safe segments (letters, digits and `._:@=+-`), none of them `.` or `..`. */
export const KEY_PATTERN = '^(?!\\.\\.?(/|$))[A-Za-z0-9._:@=+-]+(/(?!\\.\\.?(/|$))[A-Za-z0-9._:@=+-]+)*$'

/**
 * One registry entry as it travels between peers and as it is stored.
 * The value travels as JSON text so the writer's signature covers exact bytes.
 */
export const WireEntrySchema = Type.Object({
  /** key, e.g. `node/12D3Koo…` */
  k: Type.String({ minLength: 1, maxLength: MAX_KEY_LENGTH, pattern: KEY_PATTERN }),
  /** JSON text of the value, or null for a tombstone */
  v: Type.Union([Type.String({ maxLength: MAX_VALUE_BYTES }), Type.Null()]),
  /** hybrid logical clock: [wall clock ms, logical counter] */
  t: Type.Tuple([
    Type.Integer({ minimum: 0, maximum: 2 ** 48 }),
    Type.Integer({ minimum: 0, maximum: 2 ** 31 })
  ]),
  /** writer's peer id */
  w: Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' }),
  /** writer's Ed25519 signature, base64url */
  s: Type.String({ minLength: 10, maxLength: 256, pattern: '^[A-Za-z0-9_-]+$' }),
  /** fleet authorisation (compact JWS) for keys the writer does not own */
  a: Type.Optional(Type.String({ minLength: 10, maxLength: 16 * 1024 }))
}, { additionalProperties: false })

export type WireEntry = Static<typeof WireEntrySchema>
export type Timestamp = WireEntry['t']
