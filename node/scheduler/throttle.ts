/**
 * A write budget per key: the first write goes at once; a key rewritten
 * again within its delay waits, and a key that keeps being rewritten sees
 * its delay double up to `maxMs`, falling back to `minMs` after a quiet
 * spell. Whatever the inputs do, a scheduler writes each placement at most
 * once per delay: no input can make it write in a loop.
 */
export class WriteBudget {
  readonly #minMs: number
  readonly #maxMs: number
  readonly #keys = new Map<string, { last: number, delay: number }>()

  constructor (minMs: number, maxMs: number) {
    this.#minMs = minMs
    this.#maxMs = Math.max(minMs, maxMs)
  }

  /** Whether `key` may be written now. */
  allows (key: string, now: number): boolean {
    const k = this.#keys.get(key)
    return k == null || now - k.last >= k.delay
  }

  /** Record a write of `key`. */
  wrote (key: string, now: number): void {
    const k = this.#keys.get(key)
    // a rewrite soon after the previous one is a sign of churn: back off further
    const delay = k == null || now - k.last > 2 * k.delay ? this.#minMs : Math.min(this.#maxMs, k.delay * 2)
    this.#keys.set(key, { last: now, delay })
  }

  /** Current delay for `key` (for logs and tests). */
  delayOf (key: string): number {
    return this.#keys.get(key)?.delay ?? 0
  }

  /** Forget keys not written for a long while, so the map stays small. */
  prune (now: number): void {
    for (const [key, k] of this.#keys) if (now - k.last > 2 * this.#maxMs) this.#keys.delete(key)
  }
}
