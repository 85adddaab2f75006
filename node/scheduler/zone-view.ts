import { zoneOf } from './keys.ts'
import { chooseLeader, positionOf, rank, type ClaimState, type Leader, type ZoneMember } from './leader.ts'
import type { ScheduleRecord } from './lease.ts'
import type { ZoneMemory } from './terms.ts'
import type { Member } from '../membership/membership.ts'

/** Roles that may schedule: the coordinator stays out so the mesh never depends on it. */
const ELIGIBLE_ROLES = new Set(['server', 'gateway'])

/** Every zone's members as the leader choice sees them, in one pass over the member list. */
export function groupByZone (members: readonly Member[]): Map<string, ZoneMember[]> {
  const out = new Map<string, ZoneMember[]>()
  for (const m of members) {
    const zone = zoneOf(m.labels)
    let list = out.get(zone)
    if (list == null) out.set(zone, list = [])
    list.push(zoneMember(m))
  }
  return out
}

/** A member as the leader choice sees it. */
function zoneMember (m: Member): ZoneMember {
  return {
    peerId: m.peerId,
    state: m.state,
    eligible: m.role != null && ELIGIBLE_ROLES.has(m.role) && m.clockSkewed !== true,
    ...(m.clockSkewed === true ? { skewed: true } : {}),
    ...(m.role == null ? {} : { role: m.role })
  }
}

/** Peer ids of a zone's eligible members, from `groupByZone` (only those `state` if given). */
export function eligibleOf (members: ZoneMember[], state?: Member['state']): Set<string> {
  return new Set(members.filter(m => m.eligible && (state == null || m.state === state)).map(m => m.peerId))
}

/** How many leases a claim whose holder membership holds alive stays live without a renewal. */
const LATE_RENEWAL_GRACE = 2

interface Lease {
  term: number
  leaseMs: number
  /** monotonic ms of the renewal's arrival */
  receivedAt: number
}

/** This node's own claim, as the zone view needs it. */
export interface OwnClaim {
  term: number
  live: boolean
}

export type ChosenLeader = Leader & { established: boolean, endorsements: number }

/**
 * What one node knows about one zone: peers' leases timed by arrival on
 * this node's monotonic clock, who endorses whom, the scheduler it follows
 * and since when the zone has had none, and its memory of terms.
 */
export class ZoneView {
  readonly zone: string
  readonly #leases = new Map<string, Lease>()
  readonly #endorsements = new Map<string, string>()
  current: ChosenLeader | undefined
  anchor = 0
  vacantSince: number | undefined
  /** since when a live claim has outranked the current scheduler's live claim by precedence alone */
  #challengedSince: number | undefined
  memory: ZoneMemory

  constructor (zone: string, memory: ZoneMemory = { floor: 0, followed: [] }) {
    this.zone = zone
    this.memory = memory
  }

  /**
   * Fold in what a peer's key now holds. A fresh claim is a renewal; a claim
   * handed over stale (old anti-entropy) is known but not live; a deletion or
   * an endorsement withdraws the claim; an invalid value changes nothing: the
   * lease it replaced runs out on its own.
   */
  fold (peerId: string, record: ScheduleRecord | undefined, deleted: boolean, fresh: boolean, now: number): void {
    if (record?.kind === 'endorsement') this.#endorsements.set(peerId, record.endorsement.follows)
    else this.#endorsements.delete(peerId)
    if (record?.kind === 'claim') {
      if (fresh) this.#leases.set(peerId, { term: record.claim.term, leaseMs: record.claim.leaseMs, receivedAt: now })
      else if (this.#leases.get(peerId)?.term !== record.claim.term) this.#leases.delete(peerId)
    } else if (record != null || deleted) {
      this.#leases.delete(peerId)
    }
  }

  /** A stall of `late` ms does not count as vacancy this node witnessed. */
  skipVacancy (late: number, now: number): void {
    if (this.vacantSince != null) this.vacantSince = Math.min(now, this.vacantSince + late)
  }

  /** The eligible members' ids, and those membership holds alive, kept while the election hands in the same member list (its grouping is kept between changes). */
  #eligible (members: ZoneMember[]): { ids: ReadonlySet<string>, alive: ReadonlySet<string> } {
    if (this.#eligibleOf?.members !== members) this.#eligibleOf = { members, ids: eligibleOf(members), alive: eligibleOf(members, 'alive') }
    return this.#eligibleOf
  }

  #eligibleOf: { members: ZoneMember[], ids: ReadonlySet<string>, alive: ReadonlySet<string> } | undefined

  /**
   * Peers' claims and whether each is live: renewed within its lease, or
   * within LATE_RENEWAL_GRACE leases while membership holds its holder
   * alive. A scheduler starved of CPU renews late; a lease that lapsed on
   * that alone emptied the zone, every member changed its endorsement, and
   * on a loaded machine that churn kept the next scheduler starved in turn
   * (50 agents on 2 cores). A holder that crashed is failed by membership
   * within the lease anyway, so its lease still ends on time.
   */
  #claims (self: string, eligible: { ids: ReadonlySet<string>, alive: ReadonlySet<string> }, now: number): ClaimState[] {
    const claims: ClaimState[] = []
    for (const [peerId, lease] of this.#leases) {
      if (peerId === self || !eligible.ids.has(peerId)) continue
      const age = now - lease.receivedAt
      claims.push({ peerId, term: lease.term, live: age <= lease.leaseMs || (age <= LATE_RENEWAL_GRACE * lease.leaseMs && eligible.alive.has(peerId)) })
    }
    return claims
  }

  /**
   * Choose the zone's scheduler now; returns whether it changed.
   *
   * A live current scheduler gives way at once to a claim endorsed more
   * widely, but to one that wins only the tie-break (as many endorsements)
   * only once that has held for `tieHoldMs`. Right after a partition heals
   * the two sides' views differ for a moment: the other side's old verdict
   * "dead" on one of this side's endorsers arrives before that member's
   * refutation, its endorsement stops counting, and the side more members
   * followed looked tied for ~100 ms and handed the zone to the other
   * side's higher term. A tie that lasts (an even split) is still settled
   * by the one precedence rule, `tieHoldMs` later.
   */
  choose (members: ZoneMember[], self: string, mine: OwnClaim | undefined, now: number, staggerMs: number, tieHoldMs = 0): boolean {
    const eligible = this.#eligible(members)
    const claims = this.#claims(self, eligible, now)
    if (mine != null && eligible.ids.has(self)) claims.push({ peerId: self, term: mine.term, live: mine.live })
    const choice = chooseLeader({
      claims,
      // endorsers from outside `members` count for nothing there: only live members' endorsements do
      endorsements: this.#endorsements,
      members,
      floor: this.memory.floor,
      ...(this.current == null ? {} : { current: this.current }),
      vacantForMs: this.vacantSince == null ? 0 : now - this.vacantSince,
      staggerMs
    })
    this.anchor = choice.anchor
    let leader = choice.leader
    const incumbent = choice.incumbent
    if (leader != null && incumbent != null && (leader.peerId !== incumbent.peerId || leader.term !== incumbent.term) && leader.endorsements <= incumbent.endorsements) {
      this.#challengedSince ??= now
      if (now - this.#challengedSince < tieHoldMs) leader = incumbent
    } else {
      this.#challengedSince = undefined
    }
    const changed = leader?.peerId !== this.current?.peerId || leader?.term !== this.current?.term
    this.current = leader
    if (leader == null) this.vacantSince ??= now
    else this.vacantSince = undefined
    return changed
  }

  /**
   * Follow `leader` as named from outside the zone (its summary); returns
   * whether it changed. `summarisedLeader` names only a scheduler the zone's
   * fleet-wide endorsements establish; their count is not kept here.
   */
  adopt (leader: Leader | undefined): boolean {
    const changed = leader?.peerId !== this.current?.peerId || leader?.term !== this.current?.term
    if (changed) this.current = leader == null ? undefined : { ...leader, established: false, endorsements: 0 }
    return changed
  }

  /** A live claim of an eligible member ranked ahead of `self`, if any. */
  claimantAhead (members: ZoneMember[], self: string, now: number): string | undefined {
    const me = members.find(m => m.peerId === self)
    if (me == null) return undefined
    const eligible = new Map(members.filter(m => m.eligible).map(m => [m.peerId, m]))
    return this.#claims(self, this.#eligible(members), now).find(c => c.live && rank(eligible.get(c.peerId)!) < rank(me))?.peerId
  }

  /** How many live eligible nodes rank ahead of `self` (a live lease counts as alive). */
  #position (members: ZoneMember[], self: string, now: number): number {
    return positionOf(self, members, this.#claims(self, this.#eligible(members), now))
  }

  /** Whether no live eligible node ranks ahead of `self`. */
  firstInLine (members: ZoneMember[], self: string, now: number): boolean {
    return this.#position(members, self, now) === 0
  }

  /** Whether `self` may claim the vacant zone now: first in rank, or the vacancy has lasted its stagger. */
  entitled (members: ZoneMember[], self: string, now: number, staggerMs: number): boolean {
    const position = this.#position(members, self, now)
    if (position === Infinity) return false
    return position === 0 || (this.vacantSince != null && now - this.vacantSince >= position * staggerMs)
  }
}
