import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import { compareTimestamps, type Timestamp } from './hlc.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { PrivateKey } from '@libp2p/interface'

export type { WireEntry }

/** A registry entry as modules see it: the value parsed, tombstones flagged. */
export interface RegistryEntry<T = unknown> {
  key: string
  /** undefined for a tombstone */
  value: T | undefined
  deleted: boolean
  ts: Timestamp
  writer: string
  /** present when the write carries a fleet authorisation */
  auth?: string
}

const encoder = new TextEncoder()
const DOMAIN = 'gatemesh-registry-entry/1'

/** The exact bytes a writer signs: everything in the entry but the signature. */
export function signingBytes (e: Omit<WireEntry, 's'>): Uint8Array {
  return encoder.encode(JSON.stringify([DOMAIN, e.k, e.v, e.t[0], e.t[1], e.w, e.a ?? null]))
}

/**
 * An id of the entry's whole content: every signed field and the signature.
 * Two entries share it only when they are the same entry, so a forgery can
 * never stand in for the genuine entry it imitates.
 */
export function entryId (e: WireEntry): string {
  return createHash('sha256').update(signingBytes(e)).update('\u0000').update(e.s).digest('base64url')
}

export async function signEntry (privateKey: PrivateKey, unsigned: Omit<WireEntry, 's'>): Promise<WireEntry> {
  const sig = await privateKey.sign(signingBytes(unsigned))
  const entry: WireEntry = { k: unsigned.k, v: unsigned.v, t: unsigned.t, w: unsigned.w, s: Buffer.from(sig).toString('base64url') }
  if (unsigned.a != null) entry.a = unsigned.a
  return entry
}

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 raw key bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/**
 * Writers' keys as node:crypto key objects, made once per writer: every
 * gossiped entry is verified, and libp2p's key would import its JWK again on
 * every check (a measurable share of an agent's time in a large zone).
 */
const keyCache = new Map<string, KeyObject>()

function publicKeyOf (peerId: string): KeyObject {
  let key = keyCache.get(peerId)
  if (key == null) {
    const id = peerIdFromString(peerId)
    if (id.publicKey == null) throw new Error(`peer id ${peerId} does not embed a public key`)
    if (id.publicKey.type !== 'Ed25519') throw new Error(`peer id ${peerId} is not an Ed25519 key`)
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, id.publicKey.raw]), format: 'der', type: 'spki' })
    if (keyCache.size > 10_000) keyCache.clear()
    keyCache.set(peerId, key)
  }
  return key
}

/** True when `s` is the writer's signature over the entry. Never throws. */
export async function verifyEntrySignature (e: WireEntry): Promise<boolean> {
  try {
    return verify(null, signingBytes(e), publicKeyOf(e.w), Buffer.from(e.s, 'base64url'))
  } catch {
    return false
  }
}

/**
 * Total order on entries of one key: timestamp, then writer id, then the
 * signature bytes. Taking the maximum under a total order is what makes the
 * merge commutative, associative and idempotent.
 */
export function compareEntries (a: WireEntry, b: WireEntry): number {
  const byTime = compareTimestamps(a.t, b.t)
  if (byTime !== 0) return byTime
  if (a.w !== b.w) return a.w < b.w ? -1 : 1
  if (a.s !== b.s) return a.s < b.s ? -1 : 1
  return 0
}

/** Last-writer-wins merge of two versions of one key. */
export function mergeEntry (current: WireEntry | undefined, incoming: WireEntry): WireEntry {
  if (current == null) return incoming
  return compareEntries(incoming, current) > 0 ? incoming : current
}

export function toRegistryEntry<T = unknown> (e: WireEntry): RegistryEntry<T> {
  const entry: RegistryEntry<T> = {
    key: e.k,
    value: e.v == null ? undefined : JSON.parse(e.v) as T,
    deleted: e.v == null,
    ts: e.t,
    writer: e.w
  }
  if (e.a != null) entry.auth = e.a
  return entry
}
