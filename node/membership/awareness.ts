import { TypedEventEmitter } from '@libp2p/interface'

export interface LocalHealthState {
  /** Lifeguard's local health multiplier score: 0 is healthy, higher is worse */
  score: number
  healthy: boolean
}

export interface LocalHealthEvents {
  /** `healthy` flipped */
  'health:local': CustomEvent<LocalHealthState & { reason: string }>
  /** the score changed */
  'health:score': CustomEvent<LocalHealthState & { reason: string }>
}

export interface LocalHealthInit {
  /** The score stays below this; timeouts stretch up to this many times. @default 8 */
  maxMultiplier?: number
}

/**
 * Lifeguard's Local Health Multiplier (Dadgar et al., "Lifeguard: Local
 * Health Awareness for More Accurate Failure Detection"; memberlist's
 * awareness.go). A node that misses nacks from relays, has to refute
 * suspicion of itself, or finds its own timers ran late, is more likely the
 * slow party than the peers it would accuse: its score rises, which
 * stretches its probe interval, probe timeout and suspicion timeouts, and
 * while the score is above zero it declares nobody dead (and the election
 * should not claim roles). Every successful probe lowers it by one.
 */
export class LocalHealth extends TypedEventEmitter<LocalHealthEvents> {
  readonly max: number
  #score = 0

  constructor (init: LocalHealthInit = {}) {
    super()
    this.max = Math.max(1, init.maxMultiplier ?? 8)
  }

  get score (): number {
    return this.#score
  }

  get healthy (): boolean {
    return this.#score === 0
  }

  state (): LocalHealthState {
    return { score: this.#score, healthy: this.healthy }
  }

  /** Add `delta` (clamped to [0, max − 1]). */
  apply (delta: number, reason: string): void {
    const before = this.#score
    this.#score = Math.max(0, Math.min(this.max - 1, before + delta))
    if (this.#score === before) return
    this.safeDispatchEvent('health:score', { detail: { ...this.state(), reason } })
    if ((before === 0) !== (this.#score === 0)) this.safeDispatchEvent('health:local', { detail: { ...this.state(), reason } })
  }

  /** Stretch a timeout by the current multiplier. */
  scale (ms: number): number {
    return ms * (this.#score + 1)
  }
}

export interface StallWatchInit {
  /** How often the watch wakes up. @default 200 */
  tickMs?: number
  /** Lateness past this counts as a stall. */
  thresholdMs: number
  /** @default performance.now */
  monotonic?: () => number
}

/**
 * Notices when this process did not run for a while: SIGSTOP, a starved
 * CPU, a long synchronous task. A timer that fires `late` ms after it was
 * due means every timer of ours was at least that late, so probes that
 * timed out meanwhile say nothing about the peers.
 */
export class StallWatch {
  readonly #tickMs: number
  readonly #threshold: number
  readonly #mono: () => number
  readonly #onStall: (lateMs: number) => void
  #expected = 0
  #timer?: NodeJS.Timeout
  #lastStallAt = -Infinity

  constructor (onStall: (lateMs: number) => void, init: StallWatchInit) {
    this.#onStall = onStall
    this.#tickMs = init.tickMs ?? 200
    this.#threshold = init.thresholdMs
    this.#mono = init.monotonic ?? (() => performance.now())
  }

  start (): void {
    this.#expected = this.#mono() + this.#tickMs
    this.#timer = setInterval(() => { this.check() }, this.#tickMs)
    this.#timer.unref()
  }

  stop (): void {
    clearInterval(this.#timer)
  }

  /** Monotonic time of the last stall seen, -Infinity if none. */
  get lastStallAt (): number {
    return this.#lastStallAt
  }

  /** True when a stall was seen at or after `since` (monotonic ms). */
  stalledSince (since: number): boolean {
    this.check()
    return this.#lastStallAt >= since
  }

  /** Compare now with when the watch expected to run; call from any timer to catch a stall early. */
  check (): void {
    const now = this.#mono()
    const late = now - this.#expected
    if (late > this.#threshold) {
      this.#lastStallAt = now
      this.#onStall(late)
    }
    if (now >= this.#expected) this.#expected = now + this.#tickMs
  }
}
