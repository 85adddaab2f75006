import { _SHA256 } from '@noble/hashes/sha2.js'

/**
 * SHA-256 whose chaining value can be read at a block boundary and resumed
 * from. Node's crypto hides the chaining value, so this uses noble's audited
 * implementation, and only where it is needed: once per bundle to compute the
 * chaining value at the start of its tail, and per transfer to check the tail.
 *
 * Why this is sound: SHA-256 is Merkle–Damgård. Given the chaining value at
 * offset T (a multiple of 64) and the bytes from T to the end, the final
 * digest is determined. Producing another (chaining value, tail) pair with
 * the same digest is a free-start preimage on SHA-256's compression
 * function, for which no attack on the full function is known. So a tail
 * that finishes to the bundle digest is the bundle's real tail.
 */
export class ResumableSha256 extends _SHA256 {
  /** A hash in the state it had after `length` bytes (a multiple of 64) that left `midstate`. */
  static resume (midstate: Uint8Array, length: number): ResumableSha256 {
    if (midstate.byteLength !== 32) throw new RangeError('midstate must be 32 bytes')
    if (length % 64 !== 0 || length < 0) throw new RangeError('length must be a non-negative multiple of 64')
    const h = new ResumableSha256()
    const view = new DataView(midstate.buffer, midstate.byteOffset, 32)
    h.set(view.getUint32(0), view.getUint32(4), view.getUint32(8), view.getUint32(12),
      view.getUint32(16), view.getUint32(20), view.getUint32(24), view.getUint32(28))
    h.length = length
    return h
  }

  /** The chaining value now; only meaningful at a block boundary. */
  midstate (): Uint8Array {
    if (this.pos !== 0) throw new RangeError(`not at a block boundary (${this.length} bytes hashed)`)
    const out = new Uint8Array(32)
    const view = new DataView(out.buffer)
    this.get().forEach((word, i) => { view.setUint32(i * 4, word) })
    return out
  }

  get bytesHashed (): number {
    return this.length
  }
}
