import type { NodeClaims, Role } from '../identity/certificate.ts'
import type { Logger } from 'pino'

/** A node's self-description under `node/<peerId>`. Its role and labels are advisory: the certificate's count. */
export interface NodeRecord {
  role: Role
  labels: Record<string, string>
  addresses: string[]
  sensors: Array<{ id: string, type: string, measures?: string, unit?: string, geo?: unknown }>
  backend: string | null
  version: string
  /** the node certificate, so peers that never met it can verify its writes */
  cert: string
  startedAt: number
  /** this node's local HTTP API (TF Serving predict), once it listens */
  api?: string
  /** an operator drained this node: no instances, no new placements */
  drained?: boolean
  /** deployments an operator stopped on this node */
  excluded?: string[]
}

export interface RecordAuditComponents {
  self: string
  trust: {
    claimsFor(peerId: string): NodeClaims | undefined
    isDenied(peerId: string): boolean
    learnCertificate(cert: string, peerId: string): Promise<NodeClaims>
  }
  logger: Logger
  metrics?: { recordMismatch(field: 'role' | 'labels'): void }
}

/** Warn about one peer's disagreeing record at most this often. */
const WARN_EVERY_MS = 10 * 60_000
const MAX_LABELS_CHECKED = 64

function sameLabels (a: unknown, b: Record<string, string>): boolean {
  if (a == null || typeof a !== 'object' || Array.isArray(a)) return Object.keys(b).length === 0
  const keys = Object.keys(a)
  // bounded before walking: a record may carry anything its writer likes
  if (keys.length > MAX_LABELS_CHECKED || keys.length !== Object.keys(b).length) return false
  return keys.every(k => (a as Record<string, unknown>)[k] === b[k])
}

/**
 * Reads node records for what membership needs from them: the
 * certificate (so a member we never met can be admitted) and nothing
 * else. A record whose role or labels disagree with its certificate is
 * ignored for those fields, counted, and warned about (rate-limited).
 */
export class RecordAudit {
  readonly #c: RecordAuditComponents
  readonly #warned = new Map<string, number>()
  readonly #learning = new Set<string>()

  constructor (components: RecordAuditComponents) {
    this.#c = components
  }

  /** Resolve true when `id` holds a valid certificate (learning it from the record if need be). */
  async check (id: string, record: Partial<NodeRecord>): Promise<boolean> {
    if (this.#c.trust.isDenied(id)) return false
    let claims = this.#c.trust.claimsFor(id)
    if (claims == null && typeof record.cert === 'string' && !this.#learning.has(id)) {
      this.#learning.add(id)
      try {
        claims = await this.#c.trust.learnCertificate(record.cert, id)
      } catch {
        return false
      } finally {
        this.#learning.delete(id)
      }
    }
    if (claims == null) return false
    this.#compare(id, record, claims)
    return true
  }

  #compare (id: string, record: Partial<NodeRecord>, claims: NodeClaims): void {
    const fields: Array<'role' | 'labels'> = []
    if (record.role !== undefined && record.role !== claims.role) fields.push('role')
    if (record.labels !== undefined && !sameLabels(record.labels, claims.labels ?? {})) fields.push('labels')
    if (fields.length === 0) return
    for (const f of fields) this.#c.metrics?.recordMismatch(f)
    const now = Date.now()
    if (now - (this.#warned.get(id) ?? -Infinity) < WARN_EVERY_MS) return
    if (this.#warned.size > 10_000) this.#warned.clear()
    this.#warned.set(id, now)
    this.#c.logger.warn({
      peer: id,
      fields,
      certificate: { role: claims.role, labels: claims.labels },
      record: { role: typeof record.role === 'string' ? record.role.slice(0, 32) : typeof record.role }
    }, 'a node record disagrees with its certificate; the certificate wins')
  }
}
