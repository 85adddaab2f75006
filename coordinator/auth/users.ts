import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts'
import { DEFAULT_SCRYPT, decoyHash, hashPassword, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, verifyPassword, type ScryptParams } from './passwords.ts'
import { isRole, ROLES, type UserRole } from './roles.ts'
import type { Database } from '../../node/store/db.ts'

export const USERNAME_PATTERN = '^[a-z0-9][a-z0-9._@-]{0,63}$'
const USERNAME_RE = new RegExp(USERNAME_PATTERN)

export interface UserRecord {
  username: string
  roles: UserRole[]
  passwordHash: string
  disabled: boolean
  createdAt: number
  updatedAt: number
  /**
   * Bumped on every change of password, roles or status. Access tokens
   * carry the version they were issued under; older ones stop working at once.
   */
  tokenVersion: number
}

/** A user as the API shows it. */
export interface PublicUser {
  username: string
  roles: UserRole[]
  disabled: boolean
  createdAt: number
  updatedAt: number
}

export interface NewUser {
  username: string
  password: string
  roles: UserRole[]
}

export interface UserChange {
  password?: string
  roles?: UserRole[]
  disabled?: boolean
}

export interface UserStoreInit {
  /** @default DEFAULT_SCRYPT */
  scrypt?: ScryptParams
  now?: () => number
}

export function publicUser (u: UserRecord): PublicUser {
  return { username: u.username, roles: u.roles, disabled: u.disabled, createdAt: u.createdAt, updatedAt: u.updatedAt }
}

function checkUsername (username: string): void {
  if (!USERNAME_RE.test(username)) throw new BadRequestError(`username: "${username}" must match ${USERNAME_PATTERN}`, { field: 'username' })
}

function checkPassword (password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH || password.length > MAX_PASSWORD_LENGTH) {
    throw new BadRequestError(`password: must be ${MIN_PASSWORD_LENGTH} to ${MAX_PASSWORD_LENGTH} characters`, { field: 'password' })
  }
}

function checkRoles (roles: string[]): void {
  if (roles.length === 0 || !roles.every(isRole)) throw new BadRequestError(`roles: must be a non-empty list of ${ROLES.join(', ')}`, { field: 'roles' })
}

/**
 * Users in a `users` sublevel, all held in memory too: a fleet has tens of
 * users, and checking a bearer token against its user must not touch disk.
 * The last enabled admin can be neither removed, demoted nor disabled.
 */
export class UserStore {
  readonly #db
  readonly #scrypt: ScryptParams
  readonly #now: () => number
  readonly #users = new Map<string, UserRecord>()
  readonly #creating = new Set<string>()
  #decoy?: string

  constructor (db: Database, init: UserStoreInit = {}) {
    this.#db = db.sublevel<string, UserRecord>('users', { valueEncoding: 'json' })
    this.#scrypt = init.scrypt ?? DEFAULT_SCRYPT
    this.#now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    for await (const [name, user] of this.#db.iterator()) this.#users.set(name, user)
    this.#decoy = await decoyHash(this.#scrypt)
  }

  get size (): number {
    return this.#users.size
  }

  get (username: string): UserRecord | undefined {
    return this.#users.get(username)
  }

  list (): PublicUser[] {
    return [...this.#users.values()].map(publicUser).sort((a, b) => a.username.localeCompare(b.username))
  }

  async create (input: NewUser): Promise<PublicUser> {
    checkUsername(input.username)
    checkPassword(input.password)
    checkRoles(input.roles)
    if (this.#users.has(input.username) || this.#creating.has(input.username)) throw new ConflictError(`user ${input.username} exists`, { field: 'username' })
    this.#creating.add(input.username)
    try {
      const now = this.#now()
      const user: UserRecord = {
        username: input.username,
        roles: [...new Set(input.roles)],
        passwordHash: await hashPassword(input.password, this.#scrypt),
        disabled: false,
        createdAt: now,
        updatedAt: now,
        tokenVersion: 1
      }
      await this.#db.put(user.username, user)
      this.#users.set(user.username, user)
      return publicUser(user)
    } finally {
      this.#creating.delete(input.username)
    }
  }

  async update (username: string, change: UserChange): Promise<PublicUser> {
    const current = this.#require(username)
    if (change.password != null) checkPassword(change.password)
    if (change.roles != null) checkRoles(change.roles)
    const next: UserRecord = { ...current, updatedAt: this.#now(), tokenVersion: current.tokenVersion + 1 }
    if (change.roles != null) next.roles = [...new Set(change.roles)]
    if (change.disabled != null) next.disabled = change.disabled
    if (change.password != null) next.passwordHash = await hashPassword(change.password, this.#scrypt)
    this.#keepAnAdmin(current, next)
    await this.#db.put(username, next)
    this.#users.set(username, next)
    return publicUser(next)
  }

  async delete (username: string): Promise<void> {
    const current = this.#require(username)
    this.#keepAnAdmin(current, undefined)
    await this.#db.del(username)
    this.#users.delete(username)
  }

  /**
   * The user when `password` is theirs and they are enabled. Unknown and
   * disabled users cost the same scrypt work as a wrong password.
   */
  async authenticate (username: string, password: string): Promise<UserRecord | undefined> {
    const user = this.#users.get(username)
    const ok = await verifyPassword(password, user?.passwordHash ?? this.#decoy ?? '')
    return ok && user != null && !user.disabled ? user : undefined
  }

  #require (username: string): UserRecord {
    const user = this.#users.get(username)
    if (user == null) throw new NotFoundError(`no user ${username}`)
    return user
  }

  #keepAnAdmin (before: UserRecord, after: UserRecord | undefined): void {
    const wasAdmin = before.roles.includes('admin') && !before.disabled
    const staysAdmin = after != null && after.roles.includes('admin') && !after.disabled
    if (!wasAdmin || staysAdmin) return
    const others = [...this.#users.values()].filter(u => u.username !== before.username && u.roles.includes('admin') && !u.disabled)
    if (others.length === 0) throw new ConflictError(`${before.username} is the last enabled admin`, { field: 'username' })
  }
}
