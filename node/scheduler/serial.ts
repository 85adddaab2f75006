/**
 * Runs an async pass on demand, never two at once and never closer than
 * `minGapMs` apart: a request that arrives while a pass runs (or during the
 * gap) is remembered and runs once after it, however many requests came in
 * between. So a flood of changes costs a pass every `minGapMs`, not one per
 * change.
 */
export class SerialPass {
  readonly #pass: () => Promise<void>
  readonly #onError: (err: unknown) => void
  readonly #minGapMs: number
  #running = false
  #again = false
  #waiting?: NodeJS.Timeout
  #lastEnd = -Infinity
  #closed = false

  constructor (pass: () => Promise<void>, onError: (err: unknown) => void, minGapMs = 0) {
    this.#pass = pass
    this.#onError = onError
    this.#minGapMs = minGapMs
  }

  request (): void {
    if (this.#closed) return
    if (this.#running || this.#waiting != null) {
      this.#again = this.#again || this.#running
      return
    }
    const wait = this.#lastEnd + this.#minGapMs - performance.now()
    if (wait > 0) {
      this.#waiting = setTimeout(() => {
        this.#waiting = undefined
        this.request()
      }, wait)
      return
    }
    this.#running = true
    this.#pass()
      .catch(this.#onError)
      .finally(() => {
        this.#running = false
        this.#lastEnd = performance.now()
        if (this.#again) {
          this.#again = false
          this.request()
        }
      })
  }

  /** No more passes; a pending one is dropped. */
  close (): void {
    this.#closed = true
    clearTimeout(this.#waiting)
    this.#waiting = undefined
  }

  reopen (): void {
    this.#closed = false
  }
}
