import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Opaque bearer secrets (refresh tokens, API tokens, join tokens) look like
 * `<prefix>_<id>.<secret>`: the id finds the record, the 256-bit secret
 * proves possession. Only sha256(secret) is stored — the secret is random,
 * so a fast hash is enough, and a leaked database holds nothing usable.
 */
export const TOKEN_PREFIXES = {
  refresh: 'gmr',
  api: 'gmt',
  join: 'gmj'
} as const
export type TokenKind = keyof typeof TOKEN_PREFIXES

export interface OpaqueToken {
  id: string
  /** the whole token, handed to the client once */
  token: string
  /** what to store */
  hash: string
}

const ID_RE = /^[A-Za-z0-9_-]{16}$/
const SECRET_RE = /^[A-Za-z0-9_-]{43}$/

export function hashSecret (secret: string): string {
  return createHash('sha256').update(secret).digest('base64url')
}

export function newOpaqueToken (kind: TokenKind): OpaqueToken {
  const id = randomBytes(12).toString('base64url')
  const secret = randomBytes(32).toString('base64url')
  return { id, token: `${TOKEN_PREFIXES[kind]}_${id}.${secret}`, hash: hashSecret(secret) }
}

/** Split a token of `kind` into id and secret; undefined when it is not one. */
export function parseOpaqueToken (token: string, kind: TokenKind): { id: string, secret: string } | undefined {
  const prefix = `${TOKEN_PREFIXES[kind]}_`
  if (!token.startsWith(prefix)) return undefined
  const [id, secret, extra] = token.slice(prefix.length).split('.')
  if (id == null || secret == null || extra != null || !ID_RE.test(id) || !SECRET_RE.test(secret)) return undefined
  return { id, secret }
}

/** Constant-time comparison of a presented secret with a stored hash. */
export function secretMatches (secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'base64url')
  const b = Buffer.from(storedHash, 'base64url')
  return a.length === b.length && timingSafeEqual(a, b)
}
