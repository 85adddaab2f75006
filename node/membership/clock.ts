/** A member's clock relative to ours, as our probes of it measured. */
export interface PeerClock {
  /** their wall clock minus ours, ms (filtered) */
  offsetMs: number
  /** round trip of the sample the estimate rests on, ms */
  rttMs: number
  /** monotonic ms of the latest sample */
  at: number
}

/** This node's clock against the fleet's. */
export interface SelfClock {
  /** our clock disagrees with most peers by more than the limit */
  skewed: boolean
  /** our wall clock minus the peers' (median), ms; null before any sample */
  offsetMs: number | null
  /** peers with a recent estimate */
  peers: number
  /** of those, how many disagree with us past the limit */
  disagreeing: number
  limitMs: number
}

export interface ClockInit {
  /** A clock further off than this is skewed. */
  limitMs: number
  /** Samples with a longer round trip are too vague to use. @default 1000 */
  maxRttMs?: number
  /** Estimates older than this are not counted for our own verdict. @default 600000 */
  maxAgeMs?: number
  /** @default performance.now */
  monotonic?: () => number
  /** @default Date.now */
  now?: () => number
}

const WINDOW = 3

function median (values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/**
 * Clock offsets from probe round trips, NTP-style: the ack carries the
 * responder's wall clock, and offset = theirs − (sent + received) / 2 on
 * ours, off by at most half the round trip. The median of the last three
 * samples per peer rides out one delayed answer. A node is skewed when most
 * peers it has measured disagree with it past the limit; when our own wall
 * clock steps (NTP fixed it, or an operator did), every estimate restarts.
 */
export class ClockOffsets {
  readonly limitMs: number
  readonly #maxRtt: number
  readonly #maxAge: number
  readonly #mono: () => number
  readonly #now: () => number
  readonly #samples = new Map<string, Array<{ offset: number, rtt: number, at: number }>>()
  /** `of(peer)` as last computed: it is read for every member on every listing, and changes only with a sample */
  readonly #estimates = new Map<string, PeerClock>()
  #base: number

  constructor (init: ClockInit) {
    this.limitMs = init.limitMs
    this.#maxRtt = init.maxRttMs ?? 1000
    this.#maxAge = init.maxAgeMs ?? 600_000
    this.#mono = init.monotonic ?? (() => performance.now())
    this.#now = init.now ?? Date.now
    this.#base = this.#now() - this.#mono()
  }

  /** Record one probe: our wall clock at send and receipt, theirs in the ack. */
  sample (peer: string, sentWall: number, receivedWall: number, theirs: number, rttMs: number): void {
    if (rttMs < 0 || rttMs > this.#maxRtt) return
    const offset = theirs - (sentWall + receivedWall) / 2
    let list = this.#samples.get(peer)
    if (list == null) this.#samples.set(peer, list = [])
    list.push({ offset, rtt: rttMs, at: this.#mono() })
    if (list.length > WINDOW) list.shift()
    this.#estimates.delete(peer)
  }

  of (peer: string): PeerClock | undefined {
    const known = this.#estimates.get(peer)
    if (known != null) return known
    const list = this.#samples.get(peer)
    if (list == null || list.length === 0) return undefined
    const offsetMs = Math.round(median(list.map(s => s.offset)))
    const estimate = { offsetMs, rttMs: Math.round(Math.min(...list.map(s => s.rtt))), at: list[list.length - 1]!.at }
    this.#estimates.set(peer, estimate)
    return estimate
  }

  skewed (peer: string): boolean {
    const c = this.of(peer)
    return c != null && Math.abs(c.offsetMs) > this.limitMs
  }

  /** The peers we hold samples of (a few dozen: those we probe), whatever the fleet's size. */
  measured (): IterableIterator<string> {
    return this.#samples.keys()
  }

  forget (peer: string): void {
    this.#samples.delete(peer)
    this.#estimates.delete(peer)
  }

  /** Our verdict, from the peers in `among` with a recent estimate. */
  self (among: Iterable<string>): SelfClock {
    const now = this.#mono()
    const offsets: number[] = []
    for (const peer of among) {
      const c = this.of(peer)
      if (c != null && now - c.at <= this.#maxAge) offsets.push(c.offsetMs)
    }
    const disagreeing = offsets.filter(o => Math.abs(o) > this.limitMs).length
    return {
      // "most peers" needs at least two: with one, neither side can tell who is wrong
      skewed: offsets.length >= 2 && disagreeing * 2 > offsets.length,
      offsetMs: offsets.length === 0 ? null : -Math.round(median(offsets)),
      peers: offsets.length,
      disagreeing,
      limitMs: this.limitMs
    }
  }

  /**
   * Detect a step of our own wall clock against the monotonic clock; on a
   * step past `toleranceMs`, drop every sample and return the step (ms).
   */
  checkStep (toleranceMs = 1000): number | undefined {
    const base = this.#now() - this.#mono()
    const step = base - this.#base
    this.#base = base
    if (Math.abs(step) <= toleranceMs) return undefined
    this.#samples.clear()
    this.#estimates.clear()
    return step
  }
}
