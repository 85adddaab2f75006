import { decodeJwt } from 'jose'
import { KEY_PATTERN, MAX_KEY_LENGTH, MAX_VALUE_BYTES, type WireEntry } from '../../protocols/registry/wire.ts'
import { REVOKED_PREFIX } from '../../protocols/registry/revocation.ts'
import { verifyRegistryWrite } from '../../packaging/trust.ts'
import { authorityFor, type OwnershipRule } from './acl.ts'
import { signEntry, toRegistryEntry, type RegistryEntry } from './entry.ts'
import { InvalidValueError, StaleWriteError, UnauthorizedWriteError } from './errors.ts'
import { checkTimestamp, type HybridLogicalClock, type Timestamp } from './hlc.ts'
import { checkValue } from './ingress.ts'
import { checkKeyZone } from './zone-scope.ts'
import type { RegistryGossip } from './gossip.ts'
import type { Replica } from './replica.ts'
import type { PrivateKey } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'

const KEY_RE = new RegExp(KEY_PATTERN)

export interface LocalWriterInit {
  self: string
  privateKey: PrivateKey
  fleetPublicKey: KeyObject
  rules: readonly OwnershipRule[]
  clock: () => HybridLogicalClock
  replica: Replica
  gossip: RegistryGossip
  now: () => number
  /** this node's zone, from its certificate */
  zone: () => string
}

/** What a fleet signer needs to authorise a write through this node: see `LocalWriter.stampFor`. */
export interface WriteStamp {
  key: string
  writer: string
  ts: Timestamp
}

/**
 * This node's own writes: the same bounds as anything from a peer, then
 * signed, installed and gossiped. A key this node owns is stamped by its
 * clock; any other key needs a fleet authorisation of exactly this entry,
 * and is stamped with the timestamp the authorisation names.
 */
export class LocalWriter {
  readonly #c: LocalWriterInit
  /** Keys with a write under way (being signed), and how many. */
  readonly #writing = new Map<string, number>()

  constructor (init: LocalWriterInit) {
    this.#c = init
  }

  /**
   * The writer and timestamp a fleet authorisation for `key` must bind when
   * the write goes through this node: a fresh stamp of this node's clock,
   * past the key's current entry.
   */
  stampFor (key: string): WriteStamp {
    const current = this.#c.replica.get(key)
    const clock = this.#c.clock()
    return { key, writer: this.#c.self, ts: current == null ? clock.tick() : clock.tickAfter(current.t) }
  }

  async write (key: string, json: string | null, auth: string | undefined): Promise<RegistryEntry> {
    this.#writing.set(key, (this.#writing.get(key) ?? 0) + 1)
    try {
      return await this.#write(key, json, auth)
    } finally {
      const n = this.#writing.get(key)! - 1
      if (n === 0) this.#writing.delete(key)
      else this.#writing.set(key, n)
    }
  }

  /**
   * Write `e` (one of this node's own live entries) again with a fresh
   * stamp, so the retention does not collect it. Skipped when the key
   * changed since, or a write of it is under way: that write is newer.
   */
  async refresh (e: WireEntry): Promise<void> {
    if (this.#c.replica.get(e.k) !== e || this.#writing.has(e.k)) return
    await this.write(e.k, e.v, undefined)
  }

  async #write (key: string, json: string | null, auth: string | undefined): Promise<RegistryEntry> {
    if (key.length > MAX_KEY_LENGTH || !KEY_RE.test(key)) throw new InvalidValueError(`key "${key}" is not a valid registry key`)
    if (json != null && Buffer.byteLength(json) > MAX_VALUE_BYTES) throw new InvalidValueError(`${key}: value exceeds ${MAX_VALUE_BYTES} bytes`)
    checkValue(key, json)
    const authority = authorityFor(key, this.#c.rules)
    let ts: Timestamp
    if (authority.kind === 'owner') {
      if (authority.owner !== this.#c.self) throw new UnauthorizedWriteError(`${key} belongs to ${authority.owner}`)
      checkKeyZone(key, this.#c.zone())
      ts = this.#c.clock().tick()
    } else {
      if (auth == null) throw new UnauthorizedWriteError(`${key} needs a fleet authorisation`)
      ts = await this.#authorizedStamp(key, json, auth)
    }
    const unsigned: Omit<WireEntry, 's'> = { k: key, v: json, t: ts, w: this.#c.self }
    if (authority.kind === 'fleet') unsigned.a = auth
    const entry = await signEntry(this.#c.privateKey, unsigned)
    const { replica } = this.#c
    const current = replica.get(key)
    if (!replica.wouldWin(entry)) {
      // the same authorisation again yields the very same entry: nothing to do
      if (current?.s === entry.s) return toRegistryEntry(current)
      throw new StaleWriteError(`${key}: the key already holds a newer write (${JSON.stringify(current?.t)} by ${current?.w ?? '?'}) than this authorisation's ${JSON.stringify(ts)}; authorise it again`)
    }
    replica.admit(entry)
    if (replica.install([entry], 'local').length > 0) this.#c.gossip.publish(entry)
    return toRegistryEntry(entry)
  }

  /** The timestamp a fleet authorisation binds, once it checks out for this node, this write and now. */
  async #authorizedStamp (key: string, json: string | null, auth: string): Promise<Timestamp> {
    let ts: Timestamp
    try {
      const t = decodeJwt(auth).t as Timestamp
      checkTimestamp(t)
      ts = [t[0], t[1]]
      await verifyRegistryWrite(auth, { key, valueJson: json, writer: this.#c.self, ts }, this.#c.fleetPublicKey, {
        allowPublishers: !key.startsWith(REVOKED_PREFIX),
        writingAt: Math.floor(this.#c.now() / 1000)
      })
    } catch (err: any) {
      throw new UnauthorizedWriteError(`${key}: ${String(err.message)}`, { cause: err })
    }
    const clock = this.#c.clock()
    clock.check(ts)
    clock.observe(ts)
    return ts
  }
}
