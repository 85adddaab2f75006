import { NotFoundError } from '../errors.ts'
import { newOpaqueToken, parseOpaqueToken, secretMatches } from './secrets.ts'
import type { UserRole } from './roles.ts'
import type { Database } from '../../node/store/db.ts'

/** A long-lived credential for a machine (CI, Prometheus, a script). */
export interface ApiTokenRecord {
  id: string
  name: string
  roles: UserRole[]
  hash: string
  createdBy: string
  createdAt: number
  /** null: until revoked */
  expiresAt: number | null
  lastUsedAt: number | null
}

export type PublicApiToken = Omit<ApiTokenRecord, 'hash'>

const LAST_USED_FLUSH_MS = 60_000

/**
 * API tokens in an `api-tokens` sublevel and in memory (checked on every
 * request they authenticate). Only a hash of the secret is kept; the token
 * itself is shown once, when created. Revoking deletes the record.
 */
export class ApiTokenStore {
  readonly #db
  readonly #now: () => number
  readonly #tokens = new Map<string, ApiTokenRecord>()
  readonly #used = new Set<string>()
  #flushTimer?: NodeJS.Timeout

  constructor (db: Database, init: { now?: () => number } = {}) {
    this.#db = db.sublevel<string, ApiTokenRecord>('api-tokens', { valueEncoding: 'json' })
    this.#now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    for await (const [id, record] of this.#db.iterator()) this.#tokens.set(id, record)
    // last-use times are bookkeeping: written in batches, not on every request
    this.#flushTimer = setInterval(() => { this.flush().catch(() => {}) }, LAST_USED_FLUSH_MS)
    this.#flushTimer.unref()
  }

  async close (): Promise<void> {
    clearInterval(this.#flushTimer)
    await this.flush()
  }

  async create (input: { name: string, roles: UserRole[], createdBy: string, ttlDays?: number }): Promise<{ token: string, record: PublicApiToken }> {
    const { id, token, hash } = newOpaqueToken('api')
    const now = this.#now()
    const record: ApiTokenRecord = {
      id,
      name: input.name,
      roles: [...new Set(input.roles)],
      hash,
      createdBy: input.createdBy,
      createdAt: now,
      expiresAt: input.ttlDays == null ? null : now + input.ttlDays * 86_400_000,
      lastUsedAt: null
    }
    await this.#db.put(id, record)
    this.#tokens.set(id, record)
    return { token, record: publicToken(record) }
  }

  list (): PublicApiToken[] {
    return [...this.#tokens.values()].map(publicToken).sort((a, b) => a.createdAt - b.createdAt)
  }

  async revoke (id: string): Promise<void> {
    if (!this.#tokens.has(id)) throw new NotFoundError(`no API token ${id}`)
    await this.#db.del(id)
    this.#tokens.delete(id)
    this.#used.delete(id)
  }

  /** The token's record when `token` is a valid, unexpired API token. */
  check (token: string): ApiTokenRecord | undefined {
    const parsed = parseOpaqueToken(token, 'api')
    if (parsed == null) return undefined
    const record = this.#tokens.get(parsed.id)
    if (record == null || !secretMatches(parsed.secret, record.hash)) return undefined
    const now = this.#now()
    if (record.expiresAt != null && record.expiresAt <= now) return undefined
    record.lastUsedAt = now
    this.#used.add(record.id)
    return record
  }

  async flush (): Promise<void> {
    const ids = [...this.#used]
    this.#used.clear()
    const ops = ids.flatMap(id => {
      const record = this.#tokens.get(id)
      return record == null ? [] : [{ type: 'put' as const, key: id, value: record }]
    })
    if (ops.length > 0) await this.#db.batch(ops)
  }
}

function publicToken (r: ApiTokenRecord): PublicApiToken {
  const { hash: _hash, ...rest } = r
  return rest
}
