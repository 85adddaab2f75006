/**
 * Notices that this process was stopped or starved: a periodic check that
 * runs far later than scheduled means nothing ran here meanwhile (SIGSTOP,
 * a frozen VM, a CPU-starved gateway). Lifeguard's insight: such a node's
 * view of its peers is stale, not theirs of it, so it must doubt itself
 * rather than act on what it believes.
 */
export class StallWatch {
  readonly #intervalMs: number
  readonly #thresholdMs: number
  #last: number

  constructor (intervalMs: number, thresholdMs: number, now: number) {
    this.#intervalMs = intervalMs
    this.#thresholdMs = thresholdMs
    this.#last = now
  }

  /**
   * Call from every entry point (timer, event handler). Returns how late
   * this call is beyond the expected interval when that exceeds the
   * threshold, else 0.
   */
  check (now: number): number {
    const late = now - this.#last - this.#intervalMs
    this.#last = now
    return late > this.#thresholdMs ? late : 0
  }

  /** Whether the loop is overdue right now, before any timer noticed it. */
  overdue (now: number): boolean {
    return now - this.#last - this.#intervalMs > this.#thresholdMs
  }

  /** When the loop last ran. */
  get last (): number {
    return this.#last
  }
}
