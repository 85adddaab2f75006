import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { CompactSign, compactVerify, decodeProtectedHeader, exportJWK, importJWK, type JWK } from 'jose'
import { BadSignatureError, ClaimMismatchError, ExpiredError, KeyFileError } from './errors.ts'

/**
 * Fleet signatures. Everything the fleet vouches for (node certificates,
 * publisher certificates, registry writes, bundles, deployments) is a compact
 * JWS with `alg: EdDSA` and a `typ` naming what it is, signed either by the
 * fleet key or by a publisher key whose certificate (itself fleet-signed)
 * travels in the protected header as `gmpub`.
 */

export const TYP_NODE_CERT = 'gatemesh-node-cert+jwt'
export const TYP_PUBLISHER_CERT = 'gatemesh-publisher-cert+jwt'
export const TYP_REGISTRY_WRITE = 'gatemesh-registry-write+jws'
export const TYP_BUNDLE_MANIFEST = 'gatemesh-bundle-manifest+jws'

/** Who signs: the fleet key itself, or a publisher key with its certificate. */
export interface Signer {
  key: KeyObject
  /** Present when `key` is a publisher key: its fleet-signed certificate. */
  publisherCert?: string
}

export interface Verified<T> {
  payload: T
  /** `fleet`, or the publisher name from its certificate */
  signer: string
}

export interface VerifyOptions {
  /** Accept signatures by fleet-certified publishers, not only by the fleet key. @default false */
  allowPublishers?: boolean
  /** Seconds since epoch, for tests. @default now */
  now?: number
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export async function readPrivateKey (path: string): Promise<KeyObject> {
  let pem: string
  try {
    pem = await readFile(path, 'utf8')
  } catch (err) {
    throw new KeyFileError(`cannot read private key ${path}`, { cause: err })
  }
  try {
    const key = createPrivateKey(pem)
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`key type is ${key.asymmetricKeyType}`)
    return key
  } catch (err) {
    throw new KeyFileError(`${path} is not an Ed25519 private key in PEM`, { cause: err })
  }
}

export async function readPublicKey (path: string): Promise<KeyObject> {
  let pem: string
  try {
    pem = await readFile(path, 'utf8')
  } catch (err) {
    throw new KeyFileError(`cannot read public key ${path}`, { cause: err })
  }
  return parsePublicKey(pem, path)
}

export function parsePublicKey (pem: string, what = 'public key'): KeyObject {
  try {
    const key = createPublicKey(pem)
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`key type is ${key.asymmetricKeyType}`)
    return key
  } catch (err) {
    throw new KeyFileError(`${what} is not an Ed25519 public key in PEM`, { cause: err })
  }
}

/** Short, stable fleet identifier: first 16 hex digits of sha256(SPKI DER). */
export function fleetIdOf (publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16)
}

export function sha256Hex (data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Sign `payload` (an object, serialised as JSON) as a compact JWS of type `typ`. */
export async function signJws (payload: object, typ: string, signer: Signer): Promise<string> {
  const header: Record<string, unknown> = { alg: 'EdDSA', typ }
  if (signer.publisherCert != null) header.gmpub = signer.publisherCert
  return await new CompactSign(encoder.encode(JSON.stringify(payload)))
    .setProtectedHeader(header as { alg: string })
    .sign(signer.key)
}

interface PublisherClaims { sub: string, jwk: JWK, iat: number, exp: number }

/**
 * Verify a compact JWS of type `typ` against the fleet key (or, when allowed,
 * a fleet-certified publisher). Returns the decoded JSON payload; `exp` and
 * `nbf` in the payload are enforced when present.
 */
export async function verifyJws<T = Record<string, unknown>> (jws: string, typ: string, fleetKey: KeyObject, options: VerifyOptions = {}): Promise<Verified<T>> {
  const now = options.now ?? Math.floor(Date.now() / 1000)
  let header
  try {
    header = decodeProtectedHeader(jws)
  } catch (err) {
    throw new BadSignatureError('not a compact JWS', { cause: err })
  }
  if (header.alg !== 'EdDSA') throw new BadSignatureError(`alg ${String(header.alg)} is not allowed`)
  if (header.typ !== typ) throw new ClaimMismatchError(`typ is ${String(header.typ)}, expected ${typ}`)

  let key: KeyObject | Awaited<ReturnType<typeof importJWK>> = fleetKey
  let signer = 'fleet'
  if (header.gmpub != null) {
    if (options.allowPublishers !== true) throw new BadSignatureError(`a publisher may not sign ${typ}`)
    if (typeof header.gmpub !== 'string') throw new BadSignatureError('gmpub is not a certificate')
    const cert = await verifyJws<PublisherClaims>(header.gmpub, TYP_PUBLISHER_CERT, fleetKey, { now })
    try {
      key = await importJWK(cert.payload.jwk, 'EdDSA')
    } catch (err) {
      throw new BadSignatureError('publisher certificate holds no usable key', { cause: err })
    }
    signer = cert.payload.sub
  }

  let payload: T & { exp?: unknown, nbf?: unknown }
  try {
    const result = await compactVerify(jws, key, { algorithms: ['EdDSA'] })
    payload = JSON.parse(decoder.decode(result.payload))
  } catch (err) {
    throw new BadSignatureError(`signature does not verify against the ${signer === 'fleet' ? 'fleet key' : `publisher ${signer}`}`, { cause: err })
  }
  if (payload == null || typeof payload !== 'object') throw new ClaimMismatchError('payload is not an object')
  if (typeof payload.exp === 'number' && payload.exp <= now) throw new ExpiredError(`expired at ${new Date(payload.exp * 1000).toISOString()}`)
  if (typeof payload.nbf === 'number' && payload.nbf > now + 60) throw new ExpiredError('not valid yet')
  return { payload, signer }
}

/** Issue a publisher certificate: the fleet vouches for `publicKey` under `name`. */
export async function issuePublisherCert (fleetKey: KeyObject, name: string, publicKey: KeyObject, validDays = 365): Promise<string> {
  const iat = Math.floor(Date.now() / 1000)
  const jwk = await exportJWK(publicKey)
  return await signJws({ sub: name, jwk, iat, exp: iat + validDays * 86400 }, TYP_PUBLISHER_CERT, { key: fleetKey })
}

/** One registry write exactly as it must land: key, value text (null deletes), writer and timestamp. */
export interface RegistryWrite {
  key: string
  valueJson: string | null
  /** peer id of the agent that writes the entry */
  writer: string
  /** the hybrid logical timestamp the entry carries, [wall ms, counter] */
  ts: [number, number]
}

/**
 * What a registry-write authorisation signs. It binds one entry and
 * nothing else: the key, a hash of the exact value text, the writer and
 * the entry's timestamp. Replaying it can only reproduce that same entry,
 * which loses to anything written after it, so a deleted deployment stays
 * deleted and an old tombstone's authorisation deletes nothing new.
 */
export interface RegistryWriteClaims {
  k: string
  h: string | null
  w: string
  t: [number, number]
  iat: number
  exp: number
}

/** How long an authorisation may be used to write, by default. */
export const DEFAULT_WRITE_AUTH_TTL_SEC = 300
/** Longest lifetime an authorisation may claim. */
export const MAX_WRITE_AUTH_TTL_SEC = 86_400
/** Clock disagreement tolerated between a signer and an agent (s). */
export const WRITE_AUTH_CLOCK_SLACK_SEC = 60

export interface AuthorizeOptions {
  /** @default DEFAULT_WRITE_AUTH_TTL_SEC */
  ttlSec?: number
  /** Seconds since epoch. @default now */
  now?: number
}

export async function authorizeRegistryWrite (write: RegistryWrite, signer: Signer, options: AuthorizeOptions = {}): Promise<string> {
  const iat = options.now ?? Math.floor(Date.now() / 1000)
  const ttl = Math.min(options.ttlSec ?? DEFAULT_WRITE_AUTH_TTL_SEC, MAX_WRITE_AUTH_TTL_SEC)
  const claims: RegistryWriteClaims = {
    k: write.key,
    h: write.valueJson == null ? null : sha256Hex(write.valueJson),
    w: write.writer,
    t: [write.ts[0], write.ts[1]],
    iat,
    exp: iat + ttl
  }
  return await signJws(claims, TYP_REGISTRY_WRITE, signer)
}

export interface VerifyWriteOptions {
  /** Accept fleet-certified publishers' signatures. @default true */
  allowPublishers?: boolean
  /**
   * The authorisation is being used to write now (seconds since epoch): it
   * must not have expired. Without it, only the entry's own timestamp is
   * held against the expiry, so a stored entry stays valid forever.
   */
  writingAt?: number
}

/**
 * Check that `auth` is a fleet (or publisher) authorisation of exactly this
 * entry: same key, value, writer and timestamp, and the timestamp within the
 * authorisation's lifetime.
 */
export async function verifyRegistryWrite (auth: string, write: RegistryWrite, fleetKey: KeyObject, options: VerifyWriteOptions = {}): Promise<Verified<RegistryWriteClaims>> {
  // certificates and expiry are judged at the time the entry was written
  const at = Math.floor(write.ts[0] / 1000) - WRITE_AUTH_CLOCK_SLACK_SEC
  const verified = await verifyJws<RegistryWriteClaims>(auth, TYP_REGISTRY_WRITE, fleetKey, { allowPublishers: options.allowPublishers ?? true, now: at })
  const c = verified.payload
  if (typeof c.w !== 'string' || !Array.isArray(c.t) || c.t.length !== 2 || typeof c.exp !== 'number' || typeof c.iat !== 'number') {
    throw new ClaimMismatchError('authorisation does not bind a writer, a timestamp and an expiry (sign it again with this version)')
  }
  if (c.exp - c.iat > MAX_WRITE_AUTH_TTL_SEC) throw new ClaimMismatchError(`authorisation lives longer than ${MAX_WRITE_AUTH_TTL_SEC} s`)
  const want = write.valueJson == null ? null : sha256Hex(write.valueJson)
  if (c.k !== write.key || c.h !== want) throw new ClaimMismatchError(`authorisation is for another write than ${write.key}`)
  if (c.w !== write.writer) throw new ClaimMismatchError(`authorisation names writer ${c.w}, not ${write.writer}`)
  if (c.t[0] !== write.ts[0] || c.t[1] !== write.ts[1]) throw new ClaimMismatchError(`authorisation names timestamp ${JSON.stringify(c.t)}, not ${JSON.stringify(write.ts)}`)
  if (options.writingAt != null && c.exp + WRITE_AUTH_CLOCK_SLACK_SEC <= options.writingAt) {
    throw new ExpiredError(`authorisation for ${write.key} expired at ${new Date(c.exp * 1000).toISOString()}`)
  }
  return verified
}

/**
 * Sign exact bytes as a detached compact JWS (RFC 7515 appendix F:
 * `header..signature`), so a file can carry its signature beside it without
 * being re-serialised. The bytes must be a JSON object (verification parses them).
 */
export async function signDetached (bytes: Uint8Array, typ: string, signer: Signer): Promise<string> {
  const header: Record<string, unknown> = { alg: 'EdDSA', typ }
  if (signer.publisherCert != null) header.gmpub = signer.publisherCert
  const jws = await new CompactSign(bytes).setProtectedHeader(header as { alg: string }).sign(signer.key)
  const [protectedHeader, , signature] = jws.split('.')
  return `${protectedHeader}..${signature}`
}

const B64URL = /^[A-Za-z0-9_-]+$/

/** True when `text` is the one canonical base64url spelling of its bytes (no stray low bits). */
function canonicalBase64url (text: string): boolean {
  return B64URL.test(text) && Buffer.from(text, 'base64url').toString('base64url') === text
}

/**
 * Verify a detached compact JWS over exactly `bytes`. Non-canonical base64url
 * is refused, so no two spellings of one signature exist.
 */
export async function verifyDetached<T = Record<string, unknown>> (jws: string, bytes: Uint8Array, typ: string, fleetKey: KeyObject, options: VerifyOptions = {}): Promise<Verified<T>> {
  const parts = jws.trim().split('.')
  if (parts.length !== 3 || parts[1] !== '' || !canonicalBase64url(parts[0]!) || !canonicalBase64url(parts[2]!)) {
    throw new BadSignatureError('not a detached compact JWS (header..signature)')
  }
  return await verifyJws<T>(`${parts[0]}.${Buffer.from(bytes).toString('base64url')}.${parts[2]}`, typ, fleetKey, options)
}
