import { peerIdFromString } from '@libp2p/peer-id'
import { enrollmentProofMessage, type Enrolled, type EnrollRole } from '../../protocols/enrollment/index.ts'
import { issueNodeCertificate } from '../../node/identity/certificate.ts'
import { EnrollmentTokenError, ForbiddenError, BadRequestError, NotFoundError } from '../errors.ts'
import { newOpaqueToken, parseOpaqueToken, secretMatches } from '../auth/secrets.ts'
import type { Fleet } from '../../node/identity/fleet.ts'
import type { Database } from '../../node/store/db.ts'

export const DEFAULT_JOIN_TTL_SEC = 24 * 3600

export interface EnrollmentRecord {
  id: string
  hash: string
  role: EnrollRole
  /** labels the certificate will carry; they win over labels the device asks for */
  labels: Record<string, string>
  certValidDays: number
  createdBy: string
  createdAt: number
  expiresAt: number
  usedAt: number | null
  /** the peer id enrolled with it */
  usedBy: string | null
}

export type PublicEnrollment = Omit<EnrollmentRecord, 'hash'>

export interface RedeemRequest {
  token: string
  peerId: string
  role: EnrollRole
  labels: Record<string, string>
  /** base64url signature of enrollmentProofMessage() by the peer key */
  proof: string
}

export interface EnrollmentComponents {
  db: Database
  fleet: Pick<Fleet, 'privateKey' | 'fleetId' | 'publicKeyPem' | 'networkKey'>
  /** the coordinator's mesh addresses, ending in /p2p/<peerId> */
  bootstrap(): string[]
  now?: () => number
}

/**
 * One-time, expiring join tokens and their redemption. An admin creates a
 * token for a role (and labels); a device generates its peer key locally,
 * sends only its public peer id with a signature proving it holds the
 * key, and gets back a fleet certificate for that id plus what it needs
 * to join. A token is consumed before the certificate is issued, so it
 * can never enroll two devices.
 */
export class Enrollment {
  readonly #db
  readonly #c: EnrollmentComponents
  readonly #now: () => number
  readonly #redeeming = new Set<string>()

  constructor (components: EnrollmentComponents) {
    this.#c = components
    this.#db = components.db.sublevel<string, EnrollmentRecord>('enrollments', { valueEncoding: 'json' })
    this.#now = components.now ?? Date.now
  }

  async create (input: { role: EnrollRole, labels?: Record<string, string>, ttlSec?: number, certValidDays?: number, createdBy: string }): Promise<{ token: string, enrollment: PublicEnrollment }> {
    const { id, token, hash } = newOpaqueToken('join')
    const now = this.#now()
    const record: EnrollmentRecord = {
      id,
      hash,
      role: input.role,
      labels: input.labels ?? {},
      certValidDays: input.certValidDays ?? 365,
      createdBy: input.createdBy,
      createdAt: now,
      expiresAt: now + (input.ttlSec ?? DEFAULT_JOIN_TTL_SEC) * 1000,
      usedAt: null,
      usedBy: null
    }
    await this.#db.put(id, record)
    return { token, enrollment: publicEnrollment(record) }
  }

  async list (): Promise<PublicEnrollment[]> {
    const out: PublicEnrollment[] = []
    for await (const record of this.#db.values()) out.push(publicEnrollment(record))
    return out.sort((a, b) => b.createdAt - a.createdAt)
  }

  async revoke (id: string): Promise<void> {
    if (await this.#db.get(id) == null) throw new NotFoundError(`no enrollment ${id}`)
    await this.#db.del(id)
  }

  async redeem (request: RedeemRequest): Promise<Enrolled> {
    const parsed = parseOpaqueToken(request.token, 'join')
    const record = parsed == null ? undefined : await this.#db.get(parsed.id)
    if (parsed == null || record == null || !secretMatches(parsed.secret, record.hash)) throw new EnrollmentTokenError('join token is not valid', { field: 'body.token' })
    if (record.usedAt != null || this.#redeeming.has(record.id)) throw new EnrollmentTokenError('join token was already used', { field: 'body.token' })
    if (record.expiresAt <= this.#now()) throw new EnrollmentTokenError('join token expired', { field: 'body.token' })
    if (request.role !== record.role) throw new ForbiddenError(`this join token enrolls a ${record.role}, not a ${request.role}`, { field: 'body.role' })
    let peer
    try {
      peer = peerIdFromString(request.peerId)
    } catch (err) {
      throw new BadRequestError(`body.peerId: "${request.peerId}" is not a peer id`, { field: 'body.peerId', cause: err })
    }
    if (peer.type !== 'Ed25519') throw new BadRequestError('body.peerId: must be an Ed25519 peer id', { field: 'body.peerId' })
    const signature = Buffer.from(request.proof, 'base64url')
    if (!await peer.publicKey.verify(enrollmentProofMessage(record.id, request.peerId), signature)) {
      throw new BadRequestError('body.proof: does not verify against the peer id\'s key', { field: 'body.proof' })
    }
    // check-and-claim in one synchronous step: two concurrent redemptions cannot both pass
    if (this.#redeeming.has(record.id)) throw new EnrollmentTokenError('join token was already used', { field: 'body.token' })
    this.#redeeming.add(record.id)
    try {
      const current = await this.#db.get(record.id)
      if (current == null || current.usedAt != null) throw new EnrollmentTokenError('join token was already used', { field: 'body.token' })
      await this.#db.put(record.id, { ...current, usedAt: this.#now(), usedBy: request.peerId })
    } finally {
      this.#redeeming.delete(record.id)
    }
    const labels = { ...request.labels, ...record.labels }
    const { fleet } = this.#c
    const certificate = await issueNodeCertificate(fleet.privateKey, { peerId: request.peerId, role: record.role, labels, fleetId: fleet.fleetId, validDays: record.certValidDays })
    return {
      peerId: request.peerId,
      role: record.role,
      labels,
      fleetId: fleet.fleetId,
      certificate,
      fleetPublicKey: fleet.publicKeyPem,
      networkKey: Buffer.from(fleet.networkKey).toString('base64'),
      bootstrap: this.#c.bootstrap()
    }
  }
}

function publicEnrollment (r: EnrollmentRecord): PublicEnrollment {
  const { hash: _hash, ...rest } = r
  return rest
}
