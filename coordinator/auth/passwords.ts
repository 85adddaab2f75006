import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/**
 * Password hashing with scrypt from node:crypto. The default cost follows
 * OWASP's scrypt guidance (N=2^15, r=8, p=3: 32 MiB per hash), which costs
 * ~200 ms of CPU on a 2-core gateway-class machine; the parameters travel
 * inside every stored hash, so raising them later only affects new hashes.
 */
export interface ScryptParams { N: number, r: number, p: number }

export const DEFAULT_SCRYPT: ScryptParams = { N: 2 ** 15, r: 8, p: 3 }
const KEY_BYTES = 32
const SALT_BYTES = 16
export const MIN_PASSWORD_LENGTH = 10
export const MAX_PASSWORD_LENGTH = 256

async function derive (password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  // scrypt needs 128 * N * r bytes; allow that plus headroom rather than Node's 32 MiB default
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r }
  return await new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, KEY_BYTES, options, (err, key) => { err == null ? resolve(key) : reject(err) })
  })
}

/** `scrypt$N$r$p$salt$hash` with base64url salt and hash. */
export async function hashPassword (password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const hash = await derive(password, salt, params)
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64url'), hash.toString('base64url')].join('$')
}

function parse (stored: string): { params: ScryptParams, salt: Buffer, hash: Buffer } | undefined {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return undefined
  const [N, r, p] = parts.slice(1, 4).map(Number)
  if (!Number.isInteger(N) || !Number.isInteger(r) || !Number.isInteger(p)) return undefined
  return { params: { N: N!, r: r!, p: p! }, salt: Buffer.from(parts[4]!, 'base64url'), hash: Buffer.from(parts[5]!, 'base64url') }
}

/** Constant-time check of `password` against a stored hash; false for a malformed hash. */
export async function verifyPassword (password: string, stored: string): Promise<boolean> {
  const parsed = parse(stored)
  if (parsed == null || parsed.hash.length !== KEY_BYTES) return false
  const candidate = await derive(password, parsed.salt, parsed.params)
  return timingSafeEqual(candidate, parsed.hash)
}

/**
 * A hash of a random password with the same cost as real ones. Checking
 * against it when the user does not exist spends the same time as a wrong
 * password, so response times do not tell which usernames exist.
 */
export async function decoyHash (params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  return await hashPassword(randomBytes(24).toString('base64url'), params)
}

/** A password for a first admin: 20 characters from 57 symbols without look-alikes (~116 bits). */
export function generatePassword (): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789'
  const out: string[] = []
  while (out.length < 20) {
    for (const b of randomBytes(32)) {
      // rejection sampling keeps every symbol equally likely
      if (b < 256 - (256 % alphabet.length) && out.length < 20) out.push(alphabet[b % alphabet.length]!)
    }
  }
  return out.join('')
}
