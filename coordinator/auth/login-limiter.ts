import type { Database } from '../../node/store/db.ts'

/** How failed logins are slowed. */
export interface LoginLimits {
  /** Failures of one address with one username before waiting starts. @default 5 */
  freeAttempts: number
  /** The first wait once they are spent; each further failure doubles it. @default 1000 */
  baseDelayMs: number
  /** The longest wait between two attempts of one address and username. @default 15 minutes */
  maxDelayMs: number
  /** An address and username pair without failures for this long starts over. @default 1 hour */
  resetAfterMs: number
  /** Failures from one address, whatever the username (password spraying), per window. @default 50 */
  perAddress: number
  /**
   * Failures for one username from addresses that never logged in as it,
   * per window: a ceiling for attacks spread over many addresses, generous
   * because it slows the owner too on an address of theirs that is new.
   * @default 200
   */
  perUser: number
  /** @default 15 minutes */
  windowMs: number
  /** An address that logged in as a user is exempt from that user's ceiling this long. @default 30 days */
  trustedForMs: number
  /** Entries kept per kind; the least recently touched go first. @default 100000 */
  maxEntries: number
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  freeAttempts: 5,
  baseDelayMs: 1000,
  maxDelayMs: 15 * 60_000,
  resetAfterMs: 3600_000,
  perAddress: 50,
  perUser: 200,
  windowMs: 15 * 60_000,
  trustedForMs: 30 * 24 * 3600_000,
  maxEntries: 100_000
}

/** One counter: failures (pair) or count (window); `until`: locked until (pair), window end, or trusted until. */
interface LimitRecord { n: number, until: number, last: number }

type Kind = 'pair' | 'address' | 'user' | 'trust'
const KINDS: readonly Kind[] = ['pair', 'address', 'user', 'trust']

/** The outcome of `begin`: go ahead (and report how it went), or wait. */
export type LoginAttempt =
  | { allowed: true, succeeded: () => Promise<void>, failed: () => Promise<void> }
  | { allowed: false, retryAfterSec: number, reason: 'pair' | 'address' | 'user' }

export interface LoginLimiterInit extends Partial<LoginLimits> {
  /** @default Date.now */
  now?: () => number
}

/**
 * Failed-login limits that hold under concurrency and across restarts.
 *
 * An attempt is counted as a failure *before* the password is checked —
 * synchronously, so forty concurrent guesses cannot all pass a check that
 * none of them has counted yet — and refunded when it succeeds. Limits are
 * per address and username pair (a few free attempts, then an exponential
 * backoff), per address (spraying many usernames) and per username for
 * addresses that never logged in as it (an attack from many addresses). The
 * owner of an account is slowed only where the attacker is: another
 * address of theirs, or any address they logged in from before, still gets
 * in. Counters live in level and survive a restart.
 */
export class LoginLimiter {
  readonly limits: LoginLimits
  readonly #now: () => number
  readonly #db: ReturnType<typeof limitsSublevel> | undefined
  readonly #maps: Record<Kind, Map<string, LimitRecord>> = { pair: new Map(), address: new Map(), user: new Map(), trust: new Map() }
  readonly #dirty = new Set<string>()
  #flushing: Promise<void> = Promise.resolve()

  /** `db`: where counters persist; without one they live in memory only (tests of other things). */
  constructor (db: Database | undefined, init: LoginLimiterInit = {}) {
    const { now, ...limits } = init
    this.limits = { ...DEFAULT_LOGIN_LIMITS, ...limits }
    this.#now = now ?? Date.now
    this.#db = db == null ? undefined : limitsSublevel(db)
  }

  /** Load the counters that have not expired. */
  async open (): Promise<void> {
    if (this.#db == null) return
    const now = this.#now()
    const stale: string[] = []
    for await (const [key, record] of this.#db.iterator()) {
      const [kind, id] = splitKey(key)
      if (kind == null || !isRecord(record) || this.#expired(kind, record, now)) stale.push(key)
      else this.#maps[kind].set(id, record)
    }
    if (stale.length > 0) await this.#db.batch(stale.map(key => ({ type: 'del' as const, key })))
  }

  /**
   * Decide about one login attempt and count it as a failure at once.
   * The check and the count happen in the same synchronous step.
   */
  begin (username: string, address: string): LoginAttempt {
    const now = this.#now()
    const user = username.toLowerCase()
    const pairId = `${user}\n${address}`
    const pair = this.#live('pair', pairId, now)
    if (pair != null && pair.until > now) return { allowed: false, retryAfterSec: seconds(pair.until - now), reason: 'pair' }
    const byAddress = this.#live('address', address, now)
    if (byAddress != null && byAddress.n >= this.limits.perAddress) return { allowed: false, retryAfterSec: seconds(byAddress.until - now), reason: 'address' }
    const trusted = this.#live('trust', pairId, now) != null
    const byUser = this.#live('user', user, now)
    if (!trusted && byUser != null && byUser.n >= this.limits.perUser) return { allowed: false, retryAfterSec: seconds(byUser.until - now), reason: 'user' }

    // counted now, refunded on success
    const failures = (pair?.n ?? 0) + 1
    this.#set('pair', pairId, { n: failures, until: now + this.#delay(failures), last: now })
    this.#set('address', address, windowAdd(byAddress, now, this.limits.windowMs))
    // a trusted address still counts towards the ceiling; it is only exempt from it
    this.#set('user', user, windowAdd(byUser, now, this.limits.windowMs))
    void this.#persist()

    let settled = false
    return {
      allowed: true,
      // the wait runs from the answer, not from the request: a slow check must not eat it up
      failed: async () => {
        if (settled) return
        settled = true
        const current = this.#maps.pair.get(pairId)
        if (current == null) return
        const at = this.#now()
        this.#set('pair', pairId, { ...current, until: Math.max(current.until, at + this.#delay(current.n)), last: at })
        await this.#persist()
      },
      succeeded: async () => {
        if (settled) return
        settled = true
        const at = this.#now()
        this.#delete('pair', pairId)
        this.#refund('address', address)
        this.#refund('user', user)
        this.#set('trust', pairId, { n: 1, until: at + this.limits.trustedForMs, last: at })
        await this.#persist()
      }
    }
  }

  /** Wait until every change so far is on disk. */
  async flush (): Promise<void> {
    await this.#persist()
  }

  /** Wait after the `failures`-th failure of a pair: none while free attempts remain, then doubling. */
  #delay (failures: number): number {
    const over = failures - this.limits.freeAttempts
    if (over < 0) return 0
    return Math.min(this.limits.maxDelayMs, this.limits.baseDelayMs * 2 ** Math.min(over, 40))
  }

  #expired (kind: Kind, r: LimitRecord, now: number): boolean {
    if (kind === 'pair') return now - r.last > Math.max(this.limits.resetAfterMs, r.until - r.last)
    return r.until <= now
  }

  #live (kind: Kind, id: string, now: number): LimitRecord | undefined {
    const r = this.#maps[kind].get(id)
    if (r == null) return undefined
    if (!this.#expired(kind, r, now)) return r
    this.#delete(kind, id)
    return undefined
  }

  #set (kind: Kind, id: string, r: LimitRecord): void {
    const map = this.#maps[kind]
    // re-inserted, so that the map's order is least recently touched first
    map.delete(id)
    map.set(id, r)
    this.#dirty.add(joinKey(kind, id))
    while (map.size > this.limits.maxEntries) {
      const oldest = map.keys().next().value as string
      this.#delete(kind, oldest)
    }
  }

  #delete (kind: Kind, id: string): void {
    if (this.#maps[kind].delete(id)) this.#dirty.add(joinKey(kind, id))
  }

  #refund (kind: 'address' | 'user', id: string): void {
    const r = this.#maps[kind].get(id)
    if (r != null && r.n > 0) this.#set(kind, id, { ...r, n: r.n - 1 })
  }

  /** Write what changed in one batch, after any batch already under way (so the newest state lands last). */
  async #persist (): Promise<void> {
    const db = this.#db
    if (db == null) {
      this.#dirty.clear()
      return
    }
    this.#flushing = this.#flushing.then(async () => {
      if (this.#dirty.size === 0) return
      const keys = [...this.#dirty]
      this.#dirty.clear()
      try {
        await db.batch(keys.map(key => {
          const [kind, id] = splitKey(key)
          const record = kind == null ? undefined : this.#maps[kind].get(id)
          return record == null ? { type: 'del' as const, key } : { type: 'put' as const, key, value: record }
        }))
      } catch {
        // the counters still hold in memory; the next write takes these keys along
        for (const key of keys) this.#dirty.add(key)
      }
    })
    await this.#flushing
  }
}

function limitsSublevel (db: Database) {
  return db.sublevel<string, LimitRecord>('login-limits', { valueEncoding: 'json' })
}

function seconds (ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

function windowAdd (r: LimitRecord | undefined, now: number, windowMs: number): LimitRecord {
  return r == null ? { n: 1, until: now + windowMs, last: now } : { n: r.n + 1, until: r.until, last: now }
}

function joinKey (kind: Kind, id: string): string {
  return `${kind}!${id}`
}

function splitKey (key: string): [Kind | undefined, string] {
  const bang = key.indexOf('!')
  const kind = key.slice(0, bang) as Kind
  return [KINDS.includes(kind) ? kind : undefined, key.slice(bang + 1)]
}

function isRecord (v: unknown): v is LimitRecord {
  const r = v as LimitRecord
  return r != null && typeof r === 'object' && Number.isFinite(r.n) && Number.isFinite(r.until) && Number.isFinite(r.last)
}
