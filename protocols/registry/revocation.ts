import { Type, type Static } from '@sinclair/typebox'
import { PEER_ID_PATTERN } from './wire.ts'

/**
 * A fleet-signed revocation lives in the registry under `revoked/<peerId>`,
 * written with a fleet authorisation (never a publisher's). Every agent
 * that holds one refuses the peer at the connection gater, in the gossip
 * validator and in anti-entropy, and drops what it wrote. Revocations are
 * permanent: a tombstone for one is refused.
 */
export const REVOKED_PREFIX = 'revoked/'

export function revocationKey (peerId: string): string {
  return `${REVOKED_PREFIX}${peerId}`
}

/** The revoked peer id of a `revoked/<peerId>` key, or undefined. */
export function revokedPeerOf (key: string): string | undefined {
  if (!key.startsWith(REVOKED_PREFIX)) return undefined
  const id = key.slice(REVOKED_PREFIX.length)
  return new RegExp(PEER_ID_PATTERN).test(id) ? id : undefined
}

export const RevocationSchema = Type.Object({
  /** why, for the operators who read it later */
  reason: Type.String({ maxLength: 512 }),
  /** ms since epoch, by the signer's clock */
  revokedAt: Type.Integer({ minimum: 0 }),
  /** who asked for it (a coordinator user, or `cli`) */
  by: Type.String({ maxLength: 128 })
}, { additionalProperties: false })

export type Revocation = Static<typeof RevocationSchema>
