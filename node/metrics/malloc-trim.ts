import { Counter, type Registry as PromRegistry } from 'prom-client'
import type { Logger } from 'pino'

/** The addon's surface (packaging/native/malloc-trim). */
export interface TrimAddon {
  trim(): boolean
  supported(): boolean
}

/** glibc's allocator through the addon, or why it is not there (not compiled here, or not glibc). */
export async function loadTrimAddon (): Promise<{ addon: TrimAddon } | { missing: string }> {
  try {
    // an import (not a require) so that the app bundle lists it and images carry it
    const loaded = await import('@gatemesh/malloc-trim') as { default?: TrimAddon } & Partial<TrimAddon>
    const addon = (loaded.default ?? loaded) as TrimAddon
    return addon.supported() ? { addon } : { missing: 'the C library is not glibc' }
  } catch (err: any) {
    return { missing: String(err.message).split('\n')[0]! }
  }
}

export interface MallocTrimInit {
  /** how often to trim; 0 never (config: memory.trimIntervalMs) */
  intervalMs: number
  logger: Logger
  /** the agent's metrics registry */
  registry: PromRegistry
  /** for tests: the addon, or undefined to load the real one */
  addon?: TrimAddon
  /** for tests: resident set size now */
  rss?: () => number
}

/**
 * Hands the C heap's free pages back to the kernel every `intervalMs`.
 *
 * glibc keeps what is freed in the middle of its heap (Buffers, LevelDB's
 * memtables and compactions, TLS records); on an agent of a 5000-node fleet
 * that was most of the resident memory beyond 1000 nodes' (README, Cost
 * model). `malloc_trim(0)` releases whole free pages wherever they lie; the
 * environment's `MALLOC_TRIM_THRESHOLD_` only trims the heap's top.
 */
export class MallocTrim {
  readonly #init: MallocTrimInit
  readonly #released: Counter
  readonly #seconds: Counter
  #addon?: TrimAddon
  #timer?: NodeJS.Timeout
  #stopped = false

  constructor (init: MallocTrimInit) {
    this.#init = init
    const registers = [init.registry]
    this.#released = new Counter({ name: 'gatemesh_process_malloc_trim_released_bytes_total', help: 'Resident memory handed back to the kernel by malloc_trim (the drop in RSS across each call)', registers })
    this.#seconds = new Counter({ name: 'gatemesh_process_malloc_trim_seconds_total', help: 'Time spent in malloc_trim', registers })
  }

  /** Whether trimming runs (the addon loaded and the interval is not 0). */
  get running (): boolean {
    return this.#timer != null
  }

  async start (): Promise<void> {
    if (this.#init.intervalMs === 0 || this.#timer != null) return
    if (this.#init.addon != null) {
      this.#addon = this.#init.addon
    } else {
      const loaded = await loadTrimAddon()
      if ('missing' in loaded) {
        this.#init.logger.info({ service: 'agent', reason: loaded.missing }, 'free C heap memory is not handed back to the kernel (no malloc_trim)')
        return
      }
      this.#addon = loaded.addon
    }
    // stopped while the addon loaded
    if (this.#stopped) return
    this.#timer = setInterval(() => { this.trim() }, this.#init.intervalMs)
    this.#timer.unref()
  }

  stop (): void {
    this.#stopped = true
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** Trim now; returns the bytes RSS dropped by. */
  trim (): number {
    if (this.#addon == null) return 0
    const rss = this.#init.rss ?? process.memoryUsage.rss
    const before = rss()
    const t0 = performance.now()
    this.#addon.trim()
    this.#seconds.inc((performance.now() - t0) / 1000)
    const released = Math.max(0, before - rss())
    this.#released.inc(released)
    return released
  }
}
