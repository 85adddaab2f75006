import { ClaimMismatchError } from '../../packaging/errors.ts'
import { signJws, TYP_NODE_CERT, verifyJws } from '../../packaging/trust.ts'
import type { KeyObject } from 'node:crypto'

export const ROLES = ['gateway', 'server', 'coordinator'] as const
export type Role = typeof ROLES[number]

/** What a node certificate binds: a peer id to a role and labels, for a while. */
export interface NodeClaims {
  sub: string
  role: Role
  labels: Record<string, string>
  fleet: string
  iat: number
  exp: number
}

export const DEFAULT_CERT_VALID_DAYS = 365

export interface IssueInit {
  peerId: string
  role: Role
  labels?: Record<string, string>
  fleetId: string
  /** @default DEFAULT_CERT_VALID_DAYS */
  validDays?: number
  /** Seconds since epoch. @default now */
  now?: number
}

export async function issueNodeCertificate (fleetKey: KeyObject, init: IssueInit): Promise<string> {
  const iat = init.now ?? Math.floor(Date.now() / 1000)
  const claims: NodeClaims = {
    sub: init.peerId,
    role: init.role,
    labels: init.labels ?? {},
    fleet: init.fleetId,
    iat,
    exp: iat + Math.round((init.validDays ?? DEFAULT_CERT_VALID_DAYS) * 86400)
  }
  return await signJws(claims, TYP_NODE_CERT, { key: fleetKey })
}

/**
 * Verify a node certificate: signed by this fleet's key (publishers may not
 * mint node certificates), unexpired, and — when given — naming `peerId`.
 */
export async function verifyNodeCertificate (cert: string, fleetPublicKey: KeyObject, peerId?: string): Promise<NodeClaims> {
  const { payload } = await verifyJws<NodeClaims>(cert, TYP_NODE_CERT, fleetPublicKey)
  if (typeof payload.sub !== 'string' || !(ROLES as readonly string[]).includes(payload.role) || typeof payload.exp !== 'number') {
    throw new ClaimMismatchError('certificate claims are incomplete')
  }
  if (peerId != null && payload.sub !== peerId) {
    throw new ClaimMismatchError(`certificate is for ${payload.sub}, not ${peerId}`)
  }
  return payload
}
