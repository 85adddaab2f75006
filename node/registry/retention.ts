import { authorityFor, type OwnershipRule } from './acl.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

/** How long an entry of a node-owned key lives without being written again: longer than any partition we accept. */
export const DEFAULT_RETENTION_MS = 72 * 60 * 60 * 1000

/** Sweeps happen this many times per retention period (within the bounds below). */
const SWEEPS_PER_RETENTION = 32
const MIN_SWEEP_MS = 1000
const MAX_SWEEP_MS = 10 * 60 * 1000

export interface RetentionInit {
  retentionMs: number
  rules: readonly OwnershipRule[]
  now: () => number
}

/**
 * When entries stop being kept. Every entry of a key some node owns
 * (`node/`, `health/`, `instance/`, `scheduler/`, `placement/`, `bundle/`,
 * `release/`, `zone/`), live or a tombstone, expires `retentionMs` after its timestamp; a living
 * node writes its live entries again (same value, new stamp) once they are
 * half that old, so only tombstones and the entries of nodes gone longer
 * than the retention ever expire. An expired entry is collected on every
 * node and refused wherever it comes from, by a rule that depends only on
 * the entry and the wall clock, so a replica that missed a delete and comes
 * back with the older value cannot bring it back: that value is older than
 * the collected tombstone, hence expired too.
 *
 * Fleet-authorised entries (`deployment/`, `revoked/`, `rollout/`) never expire: their
 * writer cannot stamp them again without a new fleet signature, and a
 * deployment must outlive the agent it was written through. Their
 * tombstones are kept for the same reason (collecting one would let a
 * replica that missed the undeploy resurrect the deployment); they are
 * written by whoever holds the fleet key, so there are few of them.
 */
export class Retention {
  readonly retentionMs: number
  readonly #rules: readonly OwnershipRule[]
  readonly #now: () => number

  constructor (init: RetentionInit) {
    this.retentionMs = init.retentionMs
    this.#rules = init.rules
    this.#now = init.now
  }

  /** Entries of node-owned keys stamped before this (wall clock ms) are expired. */
  horizon (): number {
    return this.#now() - this.retentionMs
  }

  expired (e: WireEntry, horizon = this.horizon()): boolean {
    return e.t[0] < horizon && authorityFor(e.k, this.#rules).kind === 'owner'
  }

  /** A live entry of `self`'s own that is half way to expiring: time to write it again. */
  due (e: WireEntry, self: string): boolean {
    if (e.w !== self || e.v == null || e.t[0] >= this.#now() - this.retentionMs / 2) return false
    const authority = authorityFor(e.k, this.#rules)
    return authority.kind === 'owner' && authority.owner === self
  }

  /** How often to collect and refresh: many times per half-life, so a refresh is never late. */
  get sweepIntervalMs (): number {
    return Math.min(MAX_SWEEP_MS, Math.max(MIN_SWEEP_MS, Math.floor(this.retentionMs / SWEEPS_PER_RETENTION)))
  }
}
