import { BadCredentialsError, InvalidTokenError, UnauthenticatedError } from '../errors.ts'
import { servicesOf, type Service, type UserRole } from './roles.ts'
import { publicUser, type PublicUser, type UserStore } from './users.ts'
import type { AccessTokens } from './access-tokens.ts'
import type { ApiTokenStore } from './api-tokens.ts'
import type { SessionStore } from './sessions.ts'

/** Who is calling: a logged-in user or a machine with an API token. */
export interface Principal {
  kind: 'user' | 'token'
  /** username, or the API token's name */
  name: string
  /** API token id, for tokens */
  id?: string
  roles: UserRole[]
  services: Service[]
  /** ms since epoch when the credential stops working; null for tokens without expiry */
  expiresAt: number | null
}

/** The body of a successful login or refresh. */
export interface LoginResult {
  token: string
  expiresAt: number
  refreshToken: string
  refreshExpiresAt: number
  user: PublicUser
  roles: UserRole[]
  services: Service[]
}

export interface AuthComponents {
  users: UserStore
  sessions: SessionStore
  accessTokens: AccessTokens
  apiTokens: ApiTokenStore
}

const servicesCache = new Map<string, Service[]>()
function cachedServices (roles: UserRole[]): Service[] {
  const key = roles.join(',')
  let services = servicesCache.get(key)
  if (services == null) servicesCache.set(key, services = servicesOf(roles))
  return services
}

/**
 * Logins, refreshes and turning an `Authorization` header into a
 * principal. Every failure to log in is the same BadCredentialsError, and
 * every access token is checked against its user's current state, so
 * disabling a user or changing their password or roles ends their
 * sessions at once rather than when the token expires.
 */
export class Auth {
  readonly #c: AuthComponents

  constructor (components: AuthComponents) {
    this.#c = components
  }

  async login (username: string, password: string): Promise<LoginResult> {
    const user = await this.#c.users.authenticate(username, password)
    if (user == null) throw new BadCredentialsError('username or password is wrong')
    return await this.#session(username, await this.#c.sessions.issue(username))
  }

  async refresh (refreshToken: string): Promise<LoginResult> {
    const rotated = await this.#c.sessions.rotate(refreshToken)
    const user = this.#c.users.get(rotated.username)
    if (user == null || user.disabled) {
      await this.#c.sessions.revokeUser(rotated.username)
      throw new InvalidTokenError('refresh token is not valid')
    }
    return await this.#session(rotated.username, { refreshToken: rotated.refreshToken, refreshExpiresAt: rotated.refreshExpiresAt })
  }

  async logout (refreshToken: string): Promise<void> {
    await this.#c.sessions.revoke(refreshToken)
  }

  /** After a user's password, roles or status changed (or they were deleted): drop their sessions. */
  async userChanged (username: string): Promise<void> {
    await this.#c.sessions.revokeUser(username)
  }

  async principal (authorization: string | undefined): Promise<Principal> {
    if (authorization == null || authorization === '') throw new UnauthenticatedError('this route needs a bearer token')
    const space = authorization.indexOf(' ')
    if (space < 0 || authorization.slice(0, space).toLowerCase() !== 'bearer') throw new InvalidTokenError('Authorization must be "Bearer <token>"')
    const token = authorization.slice(space + 1).trim()
    if (token.startsWith('gmt_')) {
      const record = this.#c.apiTokens.check(token)
      if (record == null) throw new InvalidTokenError('API token is not valid')
      return { kind: 'token', name: record.name, id: record.id, roles: record.roles, services: cachedServices(record.roles), expiresAt: record.expiresAt }
    }
    const claims = await this.#c.accessTokens.verify(token)
    const user = this.#c.users.get(claims.sub)
    if (user == null || user.disabled || user.tokenVersion !== claims.ver) throw new InvalidTokenError('access token was revoked')
    return { kind: 'user', name: user.username, roles: user.roles, services: cachedServices(user.roles), expiresAt: claims.exp * 1000 }
  }

  async #session (username: string, refresh: { refreshToken: string, refreshExpiresAt: number }): Promise<LoginResult> {
    const user = this.#c.users.get(username)
    if (user == null) throw new BadCredentialsError('username or password is wrong')
    const { token, expiresAt } = await this.#c.accessTokens.issue(user)
    return { token, expiresAt, refreshToken: refresh.refreshToken, refreshExpiresAt: refresh.refreshExpiresAt, user: publicUser(user), roles: user.roles, services: servicesOf(user.roles) }
  }
}
