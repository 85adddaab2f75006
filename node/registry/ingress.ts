import { compile } from '../../protocols/schema.ts'
import { withinDepth } from '../../protocols/json-bounds.ts'
import { MAX_VALUE_DEPTH, WireEntrySchema, type WireEntry } from '../../protocols/registry/wire.ts'
import { REVOKED_PREFIX, revokedPeerOf, RevocationSchema } from '../../protocols/registry/revocation.ts'
import { verifyRegistryWrite } from '../../packaging/trust.ts'
import { authorityFor, type OwnershipRule } from './acl.ts'
import { entryId, verifyEntrySignature } from './entry.ts'
import { BadEntrySignatureError, InvalidValueError, RevokedWriterError, UnauthorizedWriteError, UnknownWriterError } from './errors.ts'
import { checkKeyZone } from './zone-scope.ts'
import { zoneOf } from '../../protocols/registry/zones.ts'
import type { HybridLogicalClock } from './hlc.ts'
import type { WriterTrust } from './registry.ts'

const validateWire = compile(WireEntrySchema)
const validateRevocation = compile(RevocationSchema)

/**
 * Checks on one value's text that need no crypto: nesting depth (before
 * anything parses and walks it) and, for keys whose shape the registry
 * itself relies on, that shape. Throws InvalidValueError.
 */
export function checkValue (key: string, json: string | null): void {
  if (key.startsWith(REVOKED_PREFIX)) {
    if (revokedPeerOf(key) == null) throw new InvalidValueError(`${key}: not revoked/<peerId>`)
    // a revocation is permanent: nothing may delete it
    if (json == null) throw new InvalidValueError(`${key}: a revocation cannot be deleted`)
  }
  if (json == null) return
  if (!withinDepth(json, MAX_VALUE_DEPTH)) throw new InvalidValueError(`${key}: value nests deeper than ${MAX_VALUE_DEPTH} levels`)
  if (key.startsWith(REVOKED_PREFIX)) {
    let value: unknown
    try {
      value = JSON.parse(json)
    } catch (err) {
      throw new InvalidValueError(`${key}: value is not JSON`, { cause: err })
    }
    if (!validateRevocation(value)) throw new InvalidValueError(`${key}: not a revocation record {reason, revokedAt, by}`)
  }
}

/** Shape of an entry read back from disk (which may predate today's bounds). Throws InvalidValueError. */
export function checkStoredEntry (raw: unknown): WireEntry {
  if (!validateWire(raw)) throw new InvalidValueError(`stored entry is malformed: ${validateWire.errors?.[0]?.instancePath ?? ''} ${validateWire.errors?.[0]?.message ?? ''}`.trim())
  checkValue(raw.k, raw.v)
  return raw
}

/** Entries whose checks passed (or are under way) that the verifier remembers. */
const REMEMBERED_CHECKS = 8192

export interface EntryVerifierInit {
  trust: WriterTrust
  rules: readonly OwnershipRule[]
  clock: () => HybridLogicalClock
}

/**
 * Decides whether an entry from a peer may enter the replica: bounded
 * value, a writer of this fleet that is not revoked, its signature, a
 * timestamp within the drift limit, and the right to write the key (its
 * owner, or an authorisation of exactly this entry). Throws a RegistryError
 * naming the first check that failed. The writer and signature come before
 * the clock so that a refusal for drift names a writer that really wrote
 * the entry.
 *
 * The same entry is not checked twice at once, nor again soon after it
 * passed: copies of it in other deltas (a relay may repackage what it
 * forwards), or arriving by gossip and anti-entropy together, wait for the
 * one check. Checks are keyed by `entryId`, which covers the whole entry,
 * and only passes are remembered, so a forged copy can neither ride on a
 * genuine entry's pass nor make the genuine one fail.
 */
export class EntryVerifier {
  readonly #c: EntryVerifierInit
  readonly #checks = new Map<string, Promise<void>>()

  constructor (init: EntryVerifierInit) {
    this.#c = init
  }

  async verify (e: WireEntry): Promise<void> {
    const id = entryId(e)
    let check = this.#checks.get(id)
    if (check == null) {
      const started = this.#check(e)
      check = started
      this.#checks.set(id, started)
      if (this.#checks.size > REMEMBERED_CHECKS) this.#checks.delete(this.#checks.keys().next().value!)
      // a failure is not remembered: an unknown writer may be known later
      started.catch(() => { if (this.#checks.get(id) === started) this.#checks.delete(id) })
    }
    await check
  }

  async #check (e: WireEntry): Promise<void> {
    const { trust } = this.#c
    checkValue(e.k, e.v)
    if (trust.isRevoked(e.w)) throw new RevokedWriterError(`${e.k}: the fleet revoked ${e.w}`)
    let claims = trust.claimsFor(e.w)
    if (e.k === `node/${e.w}` && e.v != null) {
      // the node record carries the writer's certificate: learn it when it is new (a first sight, or a renewal)
      const cert = parseCert(e.v)
      if (cert != null && (claims == null || !trust.knowsCertificate(cert, e.w))) {
        try {
          claims = await trust.learnCertificate(cert, e.w)
        } catch (err) {
          if (claims == null) throw new UnknownWriterError(`${e.k}: certificate of ${e.w} is not valid`, { cause: err })
        }
      }
    }
    if (claims == null) throw new UnknownWriterError(`${e.k}: ${e.w} holds no certificate of this fleet`)
    if (!await verifyEntrySignature(e)) throw new BadEntrySignatureError(`${e.k}: signature of ${e.w} does not verify`)
    this.#c.clock().check(e.t)
    const authority = authorityFor(e.k, this.#c.rules)
    if (authority.kind === 'owner') {
      if (authority.owner !== e.w) throw new UnauthorizedWriteError(`${e.k}: written by ${e.w}, owned by ${authority.owner}`)
      // a zone's summary and scheduler claims come from inside the zone, by its writer's certificate
      checkKeyZone(e.k, zoneOf(claims.labels))
      return
    }
    if (e.a == null) throw new UnauthorizedWriteError(`${e.k}: no fleet authorisation`)
    try {
      await verifyRegistryWrite(e.a, { key: e.k, valueJson: e.v, writer: e.w, ts: e.t }, trust.fleetPublicKey, { allowPublishers: !e.k.startsWith(REVOKED_PREFIX) })
    } catch (err: any) {
      throw new UnauthorizedWriteError(`${e.k}: ${err.message}`, { cause: err })
    }
  }
}

function parseCert (json: string): string | undefined {
  try {
    const cert = (JSON.parse(json) as { cert?: unknown } | null)?.cert
    return typeof cert === 'string' ? cert : undefined
  } catch {
    return undefined
  }
}
