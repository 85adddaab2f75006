import { createHash, randomBytes, type KeyObject } from 'node:crypto'
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose'
import { InvalidTokenError, TokenExpiredError } from '../errors.ts'
import { isRole, type UserRole } from './roles.ts'

export const DEFAULT_ACCESS_TTL_SEC = 15 * 60
export const DEFAULT_VERIFY_CACHE = 10_000
export const ISSUER = 'gatemesh-coordinator'
export const AUDIENCE = 'gatemesh-api'
export const ACCESS_TOKEN_TYP = 'at+jwt'

/** What an access token says about its holder. */
export interface AccessClaims {
  sub: string
  roles: UserRole[]
  /** the user's token version when issued; a newer version voids the token */
  ver: number
  exp: number
  iat: number
}

export interface AccessTokenKeys {
  privateKey: KeyObject
  publicKey: KeyObject
}

export interface AccessTokensInit {
  /** @default DEFAULT_ACCESS_TTL_SEC */
  ttlSec?: number
  /** Verified tokens remembered so repeat requests skip the signature check. @default DEFAULT_VERIFY_CACHE */
  cacheSize?: number
  /** Seconds since epoch. */
  now?: () => number
}

/** Key id: the first 16 hex digits of sha256 over the public key's SPKI. */
export function keyIdOf (publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16)
}

/**
 * Short-lived EdDSA JWTs signed with the coordinator's own key (not the
 * fleet key: a leaked user token must not be able to speak for the fleet).
 * Verification pins the algorithm, type, issuer and audience, so `alg:
 * none`, HMAC confusion and tokens of other issuers all fail. A verified
 * token is cached by its exact text until it expires; the cache is what
 * lets an authenticated request cost microseconds instead of a signature
 * check.
 */
export class AccessTokens {
  readonly kid: string
  readonly ttlSec: number
  readonly #keys: AccessTokenKeys
  readonly #cacheSize: number
  readonly #now: () => number
  readonly #cache = new Map<string, AccessClaims>()

  constructor (keys: AccessTokenKeys, init: AccessTokensInit = {}) {
    this.#keys = keys
    this.kid = keyIdOf(keys.publicKey)
    this.ttlSec = init.ttlSec ?? DEFAULT_ACCESS_TTL_SEC
    this.#cacheSize = init.cacheSize ?? DEFAULT_VERIFY_CACHE
    this.#now = init.now ?? (() => Math.floor(Date.now() / 1000))
  }

  async issue (subject: { username: string, roles: UserRole[], tokenVersion: number }): Promise<{ token: string, expiresAt: number }> {
    const iat = this.#now()
    const exp = iat + this.ttlSec
    const token = await new SignJWT({ roles: subject.roles, ver: subject.tokenVersion })
      .setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN_TYP, kid: this.kid })
      .setSubject(subject.username)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(9).toString('base64url'))
      .sign(this.#keys.privateKey)
    return { token, expiresAt: exp * 1000 }
  }

  /** Verified claims, or InvalidTokenError / TokenExpiredError. */
  async verify (token: string): Promise<AccessClaims> {
    const cached = this.#cache.get(token)
    if (cached != null) {
      if (cached.exp > this.#now()) return cached
      this.#cache.delete(token)
      throw new TokenExpiredError('access token expired')
    }
    let payload
    try {
      ({ payload } = await jwtVerify(token, this.#keys.publicKey, {
        algorithms: ['EdDSA'],
        typ: ACCESS_TOKEN_TYP,
        issuer: ISSUER,
        audience: AUDIENCE,
        requiredClaims: ['sub', 'exp', 'iat'],
        currentDate: new Date(this.#now() * 1000)
      }))
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new TokenExpiredError('access token expired', { cause: err })
      throw new InvalidTokenError('access token is not valid', { cause: err })
    }
    const roles = payload.roles
    if (!Array.isArray(roles) || !roles.every(r => typeof r === 'string' && isRole(r)) || typeof payload.ver !== 'number') {
      throw new InvalidTokenError('access token claims are incomplete')
    }
    const claims: AccessClaims = { sub: payload.sub!, roles: roles as UserRole[], ver: payload.ver, exp: payload.exp!, iat: payload.iat! }
    if (this.#cache.size >= this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!)
    this.#cache.set(token, claims)
    return claims
  }
}
