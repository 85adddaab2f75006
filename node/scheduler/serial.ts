/**
 * Runs an async pass on demand, never two at once: a request that arrives
 * while a pass runs is remembered and runs once more after it, however many
 * requests came in between.
 */
export class SerialPass {
  readonly #pass: () => Promise<void>
  readonly #onError: (err: unknown) => void
  #running = false
  #again = false

  constructor (pass: () => Promise<void>, onError: (err: unknown) => void) {
    this.#pass = pass
    this.#onError = onError
  }

  request (): void {
    if (this.#running) {
      this.#again = true
      return
    }
    this.#running = true
    this.#pass()
      .catch(this.#onError)
      .finally(() => {
        this.#running = false
        if (this.#again) {
          this.#again = false
          this.request()
        }
      })
  }
}
