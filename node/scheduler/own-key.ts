import { schedulerKey } from './keys.ts'
import { FleetEndorsement } from './endorse.ts'
import type { ElectionTiming } from './election-timing.ts'
import type { Endorsement, ScheduleRecord, SchedulerClaim } from './lease.ts'
import type { Leader } from './leader.ts'
import type { Registry } from '../registry/registry.ts'
import type { Logger } from 'pino'

/** The lease this node holds (or is claiming) in its own zone. */
export interface Mine {
  term: number
  since: number
  /** monotonic start of the last renewal */
  renewedAt: number
  /** the lease holds for this node until then (monotonic); -Infinity while the claim is being written */
  validUntil: number
  /** the claim has been established by endorsements at least once this term (not merely by being alone) */
  confirmed?: boolean
  /**
   * Back from its own stall: keep the claim (and renew it) but do not act as
   * scheduler until then (monotonic), so a successor elected meanwhile is
   * heard before this node could contradict it.
   */
  probationUntil?: number
}

export interface OwnKeyInit {
  registry: Pick<Registry, 'set' | 'delete' | 'list'>
  zone: string
  self: string
  logger: Logger
  timing: Pick<ElectionTiming, 'leaseMs' | 'checkIntervalMs' | 'renewIntervalMs'>
  /** a claim or renewal write finished (either way): re-evaluate */
  onWritten: () => void
}

/**
 * This node's own key, `scheduler/<zone>/<self>`: its claim while it holds
 * the lease, else the scheduler it follows (or nothing). One write at a
 * time; an endorsement at most once per renewal interval unless urgent, so
 * whatever rewrites this key behind the node's back (its local API, a
 * replayed entry) cannot make it write in a loop.
 */
export class OwnKey {
  readonly key: string
  /** the lease this node holds or is claiming */
  mine: Mine | undefined
  /** what the registry holds under the key now */
  value: 'claim' | 'endorsement' | 'other' | 'none' = 'none'
  /** the scheduler the stored endorsement follows */
  endorsement: string | undefined
  readonly #init: OwnKeyInit
  /** `endorse/<zone>/<self>`, kept equal to the endorsement stored here */
  readonly #fleet: FleetEndorsement
  #writing = false
  #lastWrite = -Infinity

  constructor (init: OwnKeyInit) {
    this.#init = init
    this.key = schedulerKey(init.zone, init.self)
    this.#fleet = new FleetEndorsement(init.registry, init.zone, init.self, init.logger)
  }

  /** The registry changed under the key (by this node, a peer's older copy, or the local API). */
  note (record: ScheduleRecord | undefined, deleted: boolean): void {
    this.value = deleted ? 'none' : record?.kind ?? 'other'
    this.endorsement = record?.kind === 'endorsement' ? record.endorsement.follows : undefined
    this.#fleet.sync(deleted ? undefined : record)
  }

  /** Start a claim on `term`; valid once written and established. */
  claim (term: number, now: number): void {
    if (this.#writing) return
    const mine: Mine = { term, since: Date.now(), renewedAt: now, validUntil: -Infinity }
    this.mine = mine
    this.#init.logger.info({ zone: this.#init.zone, term }, 'claiming the scheduler lease')
    this.renew(mine, now)
  }

  renew (mine: Mine, now: number): void {
    if (this.#writing) return
    this.#writing = true
    mine.renewedAt = now
    const { leaseMs, checkIntervalMs } = this.#init.timing
    const claim: SchedulerClaim = { term: mine.term, leaseMs, since: mine.since }
    this.#init.registry.set(this.key, claim)
      .then(() => {
        // valid from the start of the renewal, never from its end: peers time it from arrival, which is later
        mine.validUntil = now + leaseMs - Math.max(checkIntervalMs, leaseMs / 8)
      })
      .catch(err => {
        this.#init.logger.warn({ err: err.message }, 'writing the scheduler lease failed')
        if (this.mine === mine && mine.validUntil === -Infinity) this.mine = undefined
      })
      .finally(() => {
        this.#writing = false
        this.#init.onWritten()
      })
  }

  /** Give up the lease: endorse `leader`, or write nothing if there is none to trust. */
  stepDown (leader: Leader | undefined, now: number): void {
    this.mine = undefined
    this.endorse(leader, now, true)
  }

  /**
   * Write an endorsement of `leader`, or nothing (a delete, only when the
   * key holds a claim or something unreadable). At most once per renewal
   * interval unless `urgent`.
   */
  endorse (leader: Leader | undefined, now: number, urgent: boolean): void {
    if (this.#writing || (!urgent && now - this.#lastWrite < this.#init.timing.renewIntervalMs)) return
    if (leader == null && this.value !== 'claim' && this.value !== 'other') return
    this.#writing = true
    this.#lastWrite = now
    const write = leader == null
      ? this.#init.registry.delete(this.key)
      : this.#init.registry.set(this.key, { follows: leader.peerId, term: leader.term } satisfies Endorsement)
    write.catch(err => { this.#init.logger.warn({ err: err.message }, 'writing the endorsement failed') })
      .finally(() => { this.#writing = false })
  }

  /** Remove the key (a claim left from before a restart, or on stop). */
  async remove (): Promise<void> {
    this.mine = undefined
    await this.#init.registry.delete(this.key).catch(() => {})
  }
}
