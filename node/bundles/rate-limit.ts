/**
 * Upload cap for serving chunks: each send waits for its slot so the long-run
 * rate stays at `bytesPerSec` across all streams. Gateways on metered or slow
 * links set it; 0 means unlimited.
 */
export class RateLimiter {
  readonly #rate: number
  #next = 0

  constructor (bytesPerSec: number) {
    this.#rate = bytesPerSec
  }

  async take (bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.#rate <= 0) return
    const now = Date.now()
    const start = Math.max(now, this.#next)
    this.#next = start + bytes / this.#rate * 1000
    const wait = start - now
    if (wait <= 0) return
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, wait)
      signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason) }, { once: true })
    })
  }
}
