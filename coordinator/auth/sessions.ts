import { randomBytes } from 'node:crypto'
import { InvalidTokenError, TokenExpiredError } from '../errors.ts'
import { newOpaqueToken, parseOpaqueToken, secretMatches } from './secrets.ts'
import type { Database } from '../../node/store/db.ts'

export const DEFAULT_REFRESH_TTL_MS = 7 * 24 * 3600 * 1000
const PRUNE_INTERVAL_MS = 3600 * 1000

interface RefreshRecord {
  hash: string
  username: string
  /** every token descending from one login shares a family */
  family: string
  createdAt: number
  expiresAt: number
  /** set when rotated; presenting it again means it was stolen */
  usedAt?: number
}

export interface IssuedRefresh {
  refreshToken: string
  refreshExpiresAt: number
}

export interface SessionStoreInit {
  /** @default DEFAULT_REFRESH_TTL_MS */
  refreshTtlMs?: number
  now?: () => number
}

/**
 * Refresh tokens, stored hashed and rotated on every use. A used token is
 * kept until it expires: if it is ever presented again, someone holds a
 * copy, and the whole family (every token since that login) is revoked.
 */
export class SessionStore {
  readonly #db
  readonly #ttlMs: number
  readonly #now: () => number
  #pruneTimer?: NodeJS.Timeout

  constructor (db: Database, init: SessionStoreInit = {}) {
    this.#db = db.sublevel<string, RefreshRecord>('refresh-tokens', { valueEncoding: 'json' })
    this.#ttlMs = init.refreshTtlMs ?? DEFAULT_REFRESH_TTL_MS
    this.#now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    await this.prune()
    this.#pruneTimer = setInterval(() => { this.prune().catch(() => {}) }, PRUNE_INTERVAL_MS)
    this.#pruneTimer.unref()
  }

  close (): void {
    clearInterval(this.#pruneTimer)
  }

  async issue (username: string, family = randomBytes(12).toString('base64url')): Promise<IssuedRefresh> {
    const { id, token, hash } = newOpaqueToken('refresh')
    const now = this.#now()
    const record: RefreshRecord = { hash, username, family, createdAt: now, expiresAt: now + this.#ttlMs }
    await this.#db.put(id, record)
    return { refreshToken: token, refreshExpiresAt: record.expiresAt }
  }

  /** Trade a refresh token for a new one; returns whose it was. */
  async rotate (token: string): Promise<IssuedRefresh & { username: string }> {
    const { id, record } = await this.#find(token)
    if (record.usedAt != null) {
      await this.revokeWhere(r => r.family === record.family)
      throw new InvalidTokenError('refresh token was already used; every session of that login is revoked')
    }
    if (record.expiresAt <= this.#now()) throw new TokenExpiredError('refresh token expired')
    await this.#db.put(id, { ...record, usedAt: this.#now() })
    return { ...await this.issue(record.username, record.family), username: record.username }
  }

  /** Log out: revoke the family of this token. Unknown tokens are ignored. */
  async revoke (token: string): Promise<void> {
    const found = await this.#find(token).catch(() => undefined)
    if (found != null) await this.revokeWhere(r => r.family === found.record.family)
  }

  async revokeUser (username: string): Promise<void> {
    await this.revokeWhere(r => r.username === username)
  }

  async revokeWhere (match: (r: RefreshRecord) => boolean): Promise<number> {
    const doomed: string[] = []
    for await (const [id, record] of this.#db.iterator()) if (match(record)) doomed.push(id)
    await this.#db.batch(doomed.map(key => ({ type: 'del' as const, key })))
    return doomed.length
  }

  async prune (): Promise<number> {
    const now = this.#now()
    return await this.revokeWhere(r => r.expiresAt <= now)
  }

  async #find (token: string): Promise<{ id: string, record: RefreshRecord }> {
    const parsed = parseOpaqueToken(token, 'refresh')
    const record = parsed == null ? undefined : await this.#db.get(parsed.id)
    if (parsed == null || record == null || !secretMatches(parsed.secret, record.hash)) throw new InvalidTokenError('refresh token is not valid')
    return { id: parsed.id, record }
  }
}
