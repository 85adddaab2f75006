import { ClockOffsets, type ClockInit, type PeerClock, type SelfClock } from './clock.ts'
import type { Logger } from 'pino'

/** Say it again this often while this node stays skewed. */
const REMINDER_MS = 10 * 60_000

export interface ClockWatchComponents {
  logger: Logger
  /** our verdict changed */
  onSelf(clock: SelfClock, changed: boolean): void
}

/**
 * Turns clock offsets into verdicts and says them out loud: a member whose
 * clock is off gets a warning when it starts and a note when it ends; this
 * node's own disagreement with most peers is a warning repeated every ten
 * minutes until it is fixed.
 */
export class ClockWatch {
  readonly offsets: ClockOffsets
  readonly #c: ClockWatchComponents
  readonly #mono: () => number
  readonly #skewedPeers = new Set<string>()
  #self: SelfClock
  #warnedAt = -Infinity
  /** Goes up whenever a verdict (a member's or this node's own) changes: member lists built before are stale. */
  version = 0

  constructor (components: ClockWatchComponents, init: ClockInit) {
    this.#c = components
    this.offsets = new ClockOffsets(init)
    this.#mono = init.monotonic ?? (() => performance.now())
    this.#self = this.offsets.self([])
  }

  get self (): SelfClock {
    return this.#self
  }

  of (peer: string): PeerClock | undefined {
    return this.offsets.of(peer)
  }

  skewed (peer: string): boolean {
    return this.offsets.skewed(peer)
  }

  forget (peer: string): void {
    this.offsets.forget(peer)
    this.#skewedPeers.delete(peer)
  }

  /**
   * Re-judge the clocks of the members we hold alive (`isAlive`). Only
   * measured ones can be skewed, so only they are looked at: a few dozen,
   * not the fleet.
   */
  check (isAlive: (peer: string) => boolean): void {
    const alive = [...this.offsets.measured()].filter(isAlive)
    const step = this.offsets.checkStep()
    if (step != null) this.#c.logger.info({ stepMs: Math.round(step) }, 'the wall clock stepped; measuring offsets afresh')
    const { logger } = this.#c
    for (const id of alive) {
      const skewed = this.offsets.skewed(id)
      if (skewed === this.#skewedPeers.has(id)) continue
      this.version++
      const offsetMs = this.offsets.of(id)?.offsetMs
      if (skewed) {
        this.#skewedPeers.add(id)
        logger.warn({ peer: id, offsetMs, limitMs: this.offsets.limitMs }, 'a member\'s clock disagrees with ours')
      } else {
        this.#skewedPeers.delete(id)
        logger.info({ peer: id, offsetMs }, 'a member\'s clock agrees with ours again')
      }
    }
    const previous = this.#self
    this.#self = this.offsets.self(alive)
    if (this.#self.skewed !== previous.skewed) this.version++
    const now = this.#mono()
    if (this.#self.skewed && (!previous.skewed || now - this.#warnedAt >= REMINDER_MS)) {
      this.#warnedAt = now
      logger.warn({ ...this.#self }, 'THIS NODE\'S CLOCK DISAGREES WITH MOST PEERS: fix its time (NTP); peers refuse its writes and schedulers avoid it')
    } else if (!this.#self.skewed && previous.skewed) {
      logger.info({ ...this.#self }, 'this node\'s clock agrees with its peers again')
    }
    this.#c.onSelf(this.#self, this.#self.skewed !== previous.skewed)
  }
}
