import { ClockDriftError, InvalidTimestampError } from './errors.ts'
import { MAX_COUNTER, MAX_WALL_MS, type Timestamp } from '../../protocols/registry/wire.ts'

export type { Timestamp }

/** Orders two hybrid logical timestamps: wall clock first, then the counter. */
export function compareTimestamps (a: Timestamp, b: Timestamp): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1]
}

/** The least timestamp greater than `ts`: the counter carries into the wall clock instead of passing MAX_COUNTER. */
export function successor (ts: Timestamp): Timestamp {
  return ts[1] >= MAX_COUNTER ? [ts[0] + 1, 0] : [ts[0], ts[1] + 1]
}

export interface HybridLogicalClockInit {
  /** Physical clock in ms. @default Date.now */
  now?: () => number
  /** Refuse remote timestamps further ahead of our clock than this. @default DEFAULT_MAX_DRIFT_MS */
  maxDriftMs?: number
  /**
   * Adopt a remote timestamp into this clock only when it is at most this
   * far ahead of the physical clock; one further ahead (but within the
   * drift limit) is stored, not adopted. @default maxDriftMs / 2
   */
  maxAdoptMs?: number
  /** Highest timestamp already issued, e.g. restored from disk. */
  start?: Timestamp
}

export const DEFAULT_MAX_DRIFT_MS = 60_000

/**
 * Hybrid logical clock (Kulkarni et al., 2014). Timestamps it issues are
 * strictly increasing and stay close to the physical clock.
 *
 * Peers' timestamps are folded in only within bounds, because an insider
 * chooses them: one beyond the drift limit or the wire schema is refused
 * (`observe` throws and the clock does not move), and one further ahead
 * than `maxAdoptMs` is not adopted. Adopting a stamp near the drift limit
 * would make this node's own writes look too far in the future to any peer
 * whose clock runs a little behind; with the adoption bound at half the
 * drift limit, honest clocks that agree within that half never refuse each
 * other's writes. Nothing is lost by not adopting: every key but the
 * fleet-authorised ones has a single writer, and those carry the stamp
 * their authorisation names (see `Registry.stampFor`).
 */
export class HybridLogicalClock {
  #wall: number
  #logical: number
  readonly #now: () => number
  readonly #maxDriftMs: number
  readonly #maxAdoptMs: number

  constructor (init: HybridLogicalClockInit = {}) {
    this.#now = init.now ?? Date.now
    this.#maxDriftMs = init.maxDriftMs ?? DEFAULT_MAX_DRIFT_MS
    this.#maxAdoptMs = Math.min(init.maxAdoptMs ?? this.#maxDriftMs / 2, this.#maxDriftMs)
    this.#wall = 0
    this.#logical = 0
    if (init.start != null) {
      checkTimestamp(init.start)
      this.#wall = init.start[0]
      this.#logical = init.start[1]
    }
  }

  get maxDriftMs (): number {
    return this.#maxDriftMs
  }

  /** A new timestamp for a local event. */
  tick (): Timestamp {
    const pt = this.#now()
    if (pt > this.#wall) {
      this.#wall = pt
      this.#logical = 0
    } else {
      [this.#wall, this.#logical] = successor([this.#wall, this.#logical])
    }
    return [this.#wall, this.#logical]
  }

  /**
   * A new timestamp greater than `floor` too (the current entry of a key
   * several writers share). `floor` must itself be within the drift limit.
   */
  tickAfter (floor: Timestamp): Timestamp {
    const ts = this.tick()
    if (compareTimestamps(ts, floor) > 0) return ts
    this.check(floor)
    const next = successor(floor)
    // like any peer's stamp, one far ahead is used for this write but not adopted
    if (next[0] <= this.#now() + this.#maxAdoptMs) [this.#wall, this.#logical] = next
    return next
  }

  /** Throws when `ts` is not a timestamp this clock would accept from a peer right now. */
  check (ts: Timestamp): void {
    checkTimestamp(ts)
    const pt = this.#now()
    if (ts[0] > pt + this.#maxDriftMs) {
      throw new ClockDriftError(`timestamp ${ts[0]} is ${ts[0] - pt} ms ahead of the local clock (limit ${this.#maxDriftMs} ms)`, ts[0] - pt)
    }
  }

  /**
   * Fold in a timestamp received from a peer. Throws (and does not move)
   * when it is invalid or beyond the drift limit; returns false when it is
   * valid but too far ahead to adopt, true when the clock took it in or was
   * already past it.
   */
  observe (remote: Timestamp): boolean {
    this.check(remote)
    if (remote[0] > this.#now() + this.#maxAdoptMs) return false
    if (compareTimestamps(remote, [this.#wall, this.#logical]) > 0) {
      this.#wall = remote[0]
      this.#logical = remote[1]
    }
    return true
  }

  /**
   * Adopt one of this node's own timestamps (restored from disk or handed
   * back by a peer): the clock must never issue a stamp at or below one it
   * issued before, so only the drift limit applies.
   */
  observeOwn (own: Timestamp): void {
    this.check(own)
    if (compareTimestamps(own, [this.#wall, this.#logical]) > 0) {
      this.#wall = own[0]
      this.#logical = own[1]
    }
  }

  peek (): Timestamp {
    return [this.#wall, this.#logical]
  }
}

/** Throws InvalidTimestampError unless `ts` is two integers within the wire schema's bounds. */
export function checkTimestamp (ts: Timestamp): void {
  if (!Array.isArray(ts) || ts.length !== 2 || !Number.isSafeInteger(ts[0]) || !Number.isSafeInteger(ts[1]) ||
    ts[0] < 0 || ts[0] > MAX_WALL_MS || ts[1] < 0 || ts[1] > MAX_COUNTER) {
    throw new InvalidTimestampError(`timestamp ${JSON.stringify(ts)} is outside [0..${MAX_WALL_MS}, 0..${MAX_COUNTER}]`)
  }
}
