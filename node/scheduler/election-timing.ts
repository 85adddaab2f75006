import { MAX_LEASE_MS, MIN_LEASE_MS } from './lease.ts'

export interface ElectionInit {
  /** this node's labels; its `zone` label picks the zone it schedules for */
  labels?: Record<string, string>
  /** whether this node may become a scheduler. @default true */
  eligible?: boolean
  /** @default 250 */
  checkIntervalMs?: number
  /**
   * Do not claim until this long after start: a fresh agent has heard from
   * nobody yet and would otherwise see itself as the only live node.
   * @default 3000
   */
  settleMs?: number
  /**
   * This node has peers to join (bootstrap or mDNS configured): past
   * `settleMs` it still claims nothing until it has met at least one other
   * member, or until this long after start. Agents started together on a
   * slow machine otherwise each claim before meeting anyone.
   * @default 0 (no wait)
   */
  joinMs?: number
  /** How long a claim holds after each renewal. @default DEFAULT_LEASE_MS */
  leaseMs?: number
  /** The holder renews this often. @default DEFAULT_RENEW_INTERVAL_MS */
  renewIntervalMs?: number
  /**
   * A check this much later than scheduled means this node was stalled for
   * long enough that a lease may have run out unseen. @default leaseMs − renewIntervalMs − checkIntervalMs
   */
  stallThresholdMs?: number
  /** After a stall, claim nothing and endorse no one new for this long. @default 2 × leaseMs */
  deferMs?: number
  /**
   * The k-th ranked node claims a vacant zone after k × this much vacancy:
   * longer than a better-ranked node may defer after a stall. @default deferMs + leaseMs
   */
  staggerMs?: number
  /**
   * A live scheduler gives way to a claim that beats it on the tie-break
   * alone (as many endorsements) only after the tie held this long: long
   * enough for a member wrongly declared dead across a healed partition to
   * refute it. @default leaseMs
   */
  tieHoldMs?: number
}

export const DEFAULT_LEASE_MS = 3000
export const DEFAULT_RENEW_INTERVAL_MS = 1000

/** The election's periods, every default filled in and the lease within its bounds. */
export type ElectionTiming = Required<Omit<ElectionInit, 'labels' | 'eligible'>>

/**
 * Fill in the defaults. They depend on each other: a stall must be noticed
 * before a lease could lapse unseen (threshold below lease − renewal), and
 * a better-ranked node deferring after a stall must still be ahead of the
 * next one's stagger.
 */
export function electionTiming (init: ElectionInit = {}): ElectionTiming {
  const checkIntervalMs = init.checkIntervalMs ?? 250
  const leaseMs = Math.min(MAX_LEASE_MS, Math.max(MIN_LEASE_MS, init.leaseMs ?? DEFAULT_LEASE_MS))
  const renewIntervalMs = Math.min(leaseMs / 2, init.renewIntervalMs ?? DEFAULT_RENEW_INTERVAL_MS)
  const deferMs = init.deferMs ?? 2 * leaseMs
  return {
    checkIntervalMs,
    settleMs: init.settleMs ?? 3000,
    joinMs: init.joinMs ?? 0,
    leaseMs,
    renewIntervalMs,
    stallThresholdMs: init.stallThresholdMs ?? Math.max(checkIntervalMs, leaseMs - renewIntervalMs - checkIntervalMs),
    deferMs,
    staggerMs: init.staggerMs ?? deferMs + leaseMs,
    tieHoldMs: init.tieHoldMs ?? leaseMs
  }
}
