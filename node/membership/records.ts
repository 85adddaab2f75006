import { peerIdFromString } from '@libp2p/peer-id'
import { accusationBytes, aliveBytes, relayedAckBytes, type Accusation, type MemberRecord } from '../../protocols/swim/wire.ts'
import type { PrivateKey, PublicKey } from '@libp2p/interface'

const b64 = (sig: Uint8Array): string => Buffer.from(sig).toString('base64url')

export async function signAlive (key: PrivateKey, id: string, inc: number, addrs: string[]): Promise<MemberRecord> {
  return { id, inc, addrs, sig: b64(await key.sign(aliveBytes(id, inc, addrs))) }
}

export async function signAccusation (key: PrivateKey, k: Accusation['k'], id: string, inc: number, from: string): Promise<Accusation> {
  return { k, from, sig: b64(await key.sign(accusationBytes(k, id, inc, from))) }
}

export async function signRelayedAck (key: PrivateKey, origin: string, nonce: number, target: string): Promise<string> {
  return b64(await key.sign(relayedAckBytes(origin, nonce, target)))
}

/**
 * Checks member-record signatures against the signer's peer id (which
 * embeds its Ed25519 key), remembering claims already checked so a record
 * relayed to us many times costs one verification.
 */
export class RecordVerifier {
  readonly #keys = new Map<string, PublicKey>()
  readonly #good = new Map<string, string>()
  readonly #max: number

  constructor (maxCached = 8192) {
    this.#max = maxCached
  }

  async alive (r: MemberRecord): Promise<boolean> {
    return await this.#check(r.id, r.sig, () => aliveBytes(r.id, r.inc, r.addrs))
  }

  async accusation (r: MemberRecord, acc: Accusation): Promise<boolean> {
    return await this.#check(acc.from, acc.sig, () => accusationBytes(acc.k, r.id, r.inc, acc.from))
  }

  async relayedAck (origin: string, nonce: number, target: string, sig: string): Promise<boolean> {
    // never cached: each one answers a single probe
    try {
      return await this.#key(target).verify(relayedAckBytes(origin, nonce, target), Buffer.from(sig, 'base64url'))
    } catch {
      return false
    }
  }

  async #check (signer: string, sig: string, bytes: () => Uint8Array): Promise<boolean> {
    // a hit must match the exact claim too: a signature copied onto another claim is not checked
    const claim = bytes()
    const text = `${signer}:${Buffer.from(claim).toString('latin1')}`
    if (this.#good.get(sig) === text) return true
    let ok = false
    try {
      ok = await this.#key(signer).verify(claim, Buffer.from(sig, 'base64url'))
    } catch {
      ok = false
    }
    if (ok) {
      if (this.#good.size >= this.#max) this.#good.clear()
      this.#good.set(sig, text)
    }
    return ok
  }

  #key (peerId: string): PublicKey {
    let key = this.#keys.get(peerId)
    if (key == null) {
      const id = peerIdFromString(peerId)
      if (id.publicKey == null) throw new Error(`peer id ${peerId} does not embed a public key`)
      key = id.publicKey
      if (this.#keys.size >= this.#max) this.#keys.clear()
      this.#keys.set(peerId, key)
    }
    return key
  }
}
