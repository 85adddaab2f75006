import { ClockDriftError } from './errors.ts'
import type { Timestamp } from '../../protocols/registry/wire.ts'

export type { Timestamp }

/** Orders two hybrid logical timestamps: wall clock first, then the counter. */
export function compareTimestamps (a: Timestamp, b: Timestamp): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1]
}

export interface HybridLogicalClockInit {
  /** Physical clock in ms. @default Date.now */
  now?: () => number
  /** Refuse remote timestamps further ahead of our clock than this. @default 60_000 */
  maxDriftMs?: number
  /** Highest timestamp already issued or seen, e.g. restored from disk. */
  start?: Timestamp
}

export const DEFAULT_MAX_DRIFT_MS = 60_000

/**
 * Hybrid logical clock (Kulkarni et al., 2014). Timestamps it issues are
 * strictly increasing, stay close to the physical clock, and are greater than
 * every timestamp it has observed, so a write always supersedes what its
 * writer had seen.
 */
export class HybridLogicalClock {
  #wall: number
  #logical: number
  readonly #now: () => number
  readonly #maxDriftMs: number

  constructor (init: HybridLogicalClockInit = {}) {
    this.#now = init.now ?? Date.now
    this.#maxDriftMs = init.maxDriftMs ?? DEFAULT_MAX_DRIFT_MS
    this.#wall = init.start?.[0] ?? 0
    this.#logical = init.start?.[1] ?? 0
  }

  /** A new timestamp for a local event. */
  tick (): Timestamp {
    const pt = this.#now()
    if (pt > this.#wall) {
      this.#wall = pt
      this.#logical = 0
    } else {
      this.#logical++
    }
    return [this.#wall, this.#logical]
  }

  /** Fold in a timestamp received from a peer. Throws ClockDriftError when it is too far ahead. */
  observe (remote: Timestamp): void {
    const pt = this.#now()
    if (remote[0] > pt + this.#maxDriftMs) {
      throw new ClockDriftError(`timestamp ${remote[0]} is ${remote[0] - pt} ms ahead of the local clock`)
    }
    if (compareTimestamps(remote, [this.#wall, this.#logical]) > 0) {
      this.#wall = remote[0]
      this.#logical = remote[1]
    }
  }

  peek (): Timestamp {
    return [this.#wall, this.#logical]
  }
}
