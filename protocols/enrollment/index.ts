import { Type, type Static } from '@sinclair/typebox'

/**
 * Enrollment over HTTP(S): a device trades a one-time join token, its
 * public peer id and a proof that it holds the matching key for a fleet
 * certificate and what it needs to join (`POST /api/v1/enroll` on the
 * coordinator). Shared by the coordinator and `gatemesh enroll`.
 */
export const ENROLL_PATH = '/api/v1/enroll'

export const EnrollRoleSchema = Type.Union([Type.Literal('gateway'), Type.Literal('server')])
export type EnrollRole = Static<typeof EnrollRoleSchema>

const JOIN_TOKEN_RE = /^gmj_([A-Za-z0-9_-]{16})\.[A-Za-z0-9_-]{43}$/

/** The id part of a join token (`gmj_<id>.<secret>`), or undefined when it is not one. */
export function joinTokenId (token: string): string | undefined {
  return JOIN_TOKEN_RE.exec(token)?.[1]
}

/** What the device signs with its new peer key. */
export function enrollmentProofMessage (tokenId: string, peerId: string): Uint8Array {
  return new TextEncoder().encode(`gatemesh-enroll/1:${tokenId}:${peerId}`)
}

export const EnrolledSchema = Type.Object({
  peerId: Type.String({ minLength: 10, maxLength: 128 }),
  role: EnrollRoleSchema,
  labels: Type.Record(Type.String(), Type.String()),
  fleetId: Type.String({ minLength: 1, maxLength: 64 }),
  certificate: Type.String({ minLength: 16, maxLength: 8192 }),
  fleetPublicKey: Type.String({ minLength: 16, maxLength: 4096, description: 'PEM' }),
  networkKey: Type.String({ minLength: 16, maxLength: 1024, description: 'base64 private-network key: serve the coordinator over TLS' }),
  bootstrap: Type.Array(Type.String({ minLength: 1, maxLength: 512 }), { maxItems: 64 })
}, { additionalProperties: false })

export type Enrolled = Static<typeof EnrolledSchema>
