/**
 * Lifeguard's dynamic suspicion timeout (memberlist's suspicion.go): the
 * timer starts at `maxMs` and shrinks towards `minMs` as independent
 * members confirm the suspicion, as
 * `max − (max − min) · log(n + 1) / log(k + 1)` after n of k expected
 * confirmations. One slow accuser alone gives the suspect the longest time
 * to refute; many accusers agree fast on a node that really failed.
 */
export class Suspicion {
  readonly #k: number
  readonly #minMs: number
  readonly #maxMs: number
  readonly #start: number
  readonly #mono: () => number
  readonly #confirmations = new Set<string>()
  readonly #onTimeout: (confirmations: number) => void
  #n = 0
  #timer?: NodeJS.Timeout
  #done = false

  constructor (from: string, k: number, minMs: number, maxMs: number, onTimeout: (confirmations: number) => void, monotonic: () => number = () => performance.now()) {
    this.#k = Math.max(0, k)
    this.#minMs = minMs
    this.#maxMs = Math.max(minMs, maxMs)
    this.#mono = monotonic
    this.#onTimeout = onTimeout
    // the first accuser is not a confirmation: its own suspicion may come back to us
    this.#confirmations.add(from)
    this.#start = monotonic()
    this.#arm(this.#k < 1 ? this.#minMs : this.#maxMs)
  }

  get confirmations (): number {
    return this.#n
  }

  /** Monotonic ms when the timer is due now. */
  get deadline (): number {
    return this.#start + remainingSuspicionTime(this.#n, this.#k, 0, this.#minMs, this.#maxMs)
  }

  /** Count `from` as an independent confirmation; true when it was new. */
  confirm (from: string): boolean {
    if (this.#done || this.#n >= this.#k || this.#confirmations.has(from)) return false
    this.#confirmations.add(from)
    this.#n++
    const remaining = remainingSuspicionTime(this.#n, this.#k, this.#mono() - this.#start, this.#minMs, this.#maxMs)
    this.#arm(Math.max(0, remaining))
    return true
  }

  /** Fire again after `ms` (the owner was not ready to decide). */
  postpone (ms: number): void {
    if (!this.#done) this.#arm(ms)
  }

  cancel (): void {
    this.#done = true
    clearTimeout(this.#timer)
  }

  #arm (ms: number): void {
    clearTimeout(this.#timer)
    this.#timer = setTimeout(() => { if (!this.#done) this.#onTimeout(this.#n) }, ms)
    this.#timer.unref()
  }
}

/** Time left before a suspect is declared dead; may be negative. */
export function remainingSuspicionTime (n: number, k: number, elapsedMs: number, minMs: number, maxMs: number): number {
  const frac = k < 1 ? 1 : Math.log(n + 1) / Math.log(k + 1)
  const timeout = Math.max(minMs, Math.floor(maxMs - frac * (maxMs - minMs)))
  return timeout - elapsedMs
}

/**
 * memberlist's suspicion timeout: `mult · max(1, log10(N)) · probeInterval`,
 * so the time to spread a suspicion and hear a refutation grows with the
 * fleet as gossip does.
 */
export function suspicionTimeoutMs (mult: number, members: number, probeIntervalMs: number): number {
  const scale = Math.max(1, Math.log10(Math.max(1, members)))
  return Math.round(mult * scale * probeIntervalMs)
}

/** memberlist's retransmit limit: `mult · ⌈log10(N + 1)⌉` sends per change. */
export function retransmitLimit (mult: number, members: number): number {
  return mult * Math.ceil(Math.log10(members + 1))
}
