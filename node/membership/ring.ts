import { createHash } from 'node:crypto'

/** Ids whose ring position is remembered; past this the cache starts over. */
const MAX_CACHED = 20_000

/**
 * Who probes whom. Members sit on a ring in the order of a hash of their
 * ids; each member probes its `k` successors, round robin, so every member
 * is probed by its `k` predecessors, by someone about once a probe
 * interval, and always over the same few connections.
 *
 * SWIM's random round robin over the whole fleet reaches the same rate, but
 * over libp2p every probe to a member we hold no connection to is a TCP
 * dial, a Noise handshake, identify and a certificate exchange: past the
 * connection limit (32) an agent opened about two connections a second, and
 * that, not the probes, was most of its CPU (README, Cost model). The ring
 * keeps the membership's connections to 2·k, held for good.
 *
 * Every member computes the ring from the members it holds not dead, so a
 * member whose predecessors died is picked up by the next ones alive.
 */
export class ProbeRing {
  readonly #positions = new Map<string, string>()

  /** Where `id` sits on the ring: 16 hex digits of its sha256. */
  position (id: string): string {
    let p = this.#positions.get(id)
    if (p == null) {
      if (this.#positions.size >= MAX_CACHED) this.#positions.clear()
      p = createHash('sha256').update(id).digest('hex').slice(0, 16)
      this.#positions.set(id, p)
    }
    return p
  }

  /** The `k` members that follow `self` on the ring of `ids` (self excluded, fewer when there are fewer). */
  successors (self: string, ids: Iterable<string>, k: number): string[] {
    return this.around(self, ids, k).successors
  }

  /** The `k` members that precede `self`: the ones that probe it. */
  predecessors (self: string, ids: Iterable<string>, k: number): string[] {
    return this.around(self, ids, k).predecessors
  }

  /** Both, from one sort of the ring. */
  around (self: string, ids: Iterable<string>, k: number): { successors: string[], predecessors: string[] } {
    const me = this.position(self)
    const others: Array<[string, string]> = []
    for (const id of ids) if (id !== self) others.push([this.position(id), id])
    if (k <= 0 || others.length === 0) return { successors: [], predecessors: [] }
    // ids break ties between equal positions, so every member sorts the ring alike
    others.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)
    let first = others.findIndex(([p, id]) => p > me || (p === me && id > self))
    if (first < 0) first = others.length
    const n = others.length
    const at = (i: number): string => others[((i % n) + n) % n]![1]
    const successors: string[] = []
    const predecessors: string[] = []
    for (let i = 0; i < Math.min(k, n); i++) {
      successors.push(at(first + i))
      predecessors.push(at(first - 1 - i))
    }
    return { successors, predecessors }
  }
}
