import { BUCKETS, bucketDigest, digestLine } from '../../protocols/registry-sync/index.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

/** The replica as the digests read it: each bucket's non-volatile entries, and a counter that moves whenever they change. */
export interface BucketSource {
  bucketVersion(bucket: number): number
  inBucket(bucket: number): Iterable<WireEntry>
}

interface Cached {
  versions: Float64Array
  /** per bucket, which of its entries (in the bucket's order) the digest covered */
  picked: Array<Uint8Array | undefined>
  digests: string[]
}

/**
 * Anti-entropy digests kept from round to round. Every round (this node's
 * own and every peer's) built, sorted and hashed a line per entry: at 5000
 * nodes 10 K of them, the largest single cost of an idle agent's sync. A
 * bucket is digested again only when its entries changed, or when the ones
 * an exchange covers did (an entry aged past the retention, a writer's
 * certificate moved it to another zone); the result is always what
 * `digestBuckets` gives over the covered entries. One cache per scope
 * (which zones' zone-local entries an exchange covers).
 */
export class BucketDigests {
  readonly #source: BucketSource
  readonly #scopes = new Map<string, Cached>()

  constructor (source: BucketSource) {
    this.#source = source
  }

  /** The digests of the entries `covers` picks, for the scope named `scope`. */
  digests (scope: string, covers: (e: WireEntry) => boolean): string[] {
    let c = this.#scopes.get(scope)
    if (c == null) {
      // a handful of scopes exist (none, a zone, every zone); bound the map all the same
      if (this.#scopes.size >= 16) this.#scopes.clear()
      c = { versions: new Float64Array(BUCKETS).fill(-1), picked: new Array(BUCKETS).fill(undefined), digests: new Array<string>(BUCKETS).fill('') }
      this.#scopes.set(scope, c)
    }
    for (let b = 0; b < BUCKETS; b++) {
      const version = this.#source.bucketVersion(b)
      const entries = [...this.#source.inBucket(b)]
      const picked = new Uint8Array(entries.length)
      for (let i = 0; i < entries.length; i++) picked[i] = covers(entries[i]!) ? 1 : 0
      if (c.versions[b] === version && same(c.picked[b], picked)) continue
      c.digests[b] = bucketDigest(entries.filter((_, i) => picked[i] === 1).map(digestLine))
      c.versions[b] = version
      c.picked[b] = picked
    }
    return [...c.digests]
  }
}

function same (a: Uint8Array | undefined, b: Uint8Array): boolean {
  if (a == null || a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
