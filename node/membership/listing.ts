import type { HealthRecord } from './health.ts'
import type { MemberState } from './table.ts'
import type { Member } from './types.ts'
import type { NodeClaims } from '../identity/certificate.ts'

/** What changes on its own between two listings of a member: read when asked, never kept. */
export interface MemberSource {
  lastSeenMs(peerId: string): number | null
  clockOffsetMs(peerId: string): number | null
  addresses(peerId: string): string[]
  health(peerId: string): HealthRecord | undefined
}

/** The facts a listed member is built from; it is built again only when one of them changes. */
export interface MemberFacts {
  state: MemberState
  since: number
  incarnation: number | null
  clockSkewed: boolean
  /** the member's certificate claims (role and labels), compared by identity */
  claims: NodeClaims | undefined
}

interface Kept {
  peerId: string
  member: Member
  facts: MemberFacts
  /** the listing that last handed it out */
  round: number
}

/**
 * The member objects membership hands out, kept while their facts hold.
 *
 * At N = 1000 the election's member list, built afresh each second, was a
 * quarter of the agent's allocations (~1.7 MB/s) and fed a full GC about
 * once a second at N = 5000. Now a member is a new object only when its
 * state, incarnation, clock verdict or certificate changes; what changes on
 * its own (last seen, clock offset, addresses, health report) is read
 * through the member's own accessors when someone reads it, so JSON, spreads
 * and `in` still see every field, and the values are never stale. Assigning
 * such a field replaces it with a plain value on that object.
 *
 * A new object for a changed member is what lets readers (the election's
 * zone grouping) tell a changed list from the same one by identity.
 */
export class MemberListing {
  readonly #self: string
  readonly #source: MemberSource
  readonly #kept = new Map<string, Kept>()
  #round = 0

  constructor (self: string, source: MemberSource) {
    this.#self = self
    this.#source = source
  }

  /** Start a listing of every member: members not handed out again before `endRound()` are forgotten. */
  beginRound (): void {
    this.#round++
  }

  /** Forget the members the last round did not hand out. */
  endRound (): void {
    for (const kept of this.#kept.values()) if (kept.round !== this.#round) this.#kept.delete(kept.peerId)
  }

  /** The member `peerId` with these facts: the object handed out before while they are unchanged. */
  member (peerId: string, facts: MemberFacts): Member {
    const kept = this.#kept.get(peerId)
    if (kept != null && sameFacts(kept.facts, facts)) {
      kept.round = this.#round
      return kept.member
    }
    const member = this.#build(peerId, facts)
    this.#kept.set(peerId, { peerId, member, facts, round: this.#round })
    return member
  }

  #build (peerId: string, facts: MemberFacts): Member {
    const source = this.#source
    const member = {
      peerId,
      self: peerId === this.#self,
      labels: facts.claims?.labels ?? {},
      state: facts.state,
      lastSeenMs: null,
      since: facts.since,
      incarnation: facts.incarnation,
      clockOffsetMs: null,
      clockSkewed: facts.clockSkewed,
      addresses: []
    } as Member
    if (facts.claims?.role != null) member.role = facts.claims.role
    live(member, 'lastSeenMs', () => source.lastSeenMs(peerId))
    live(member, 'clockOffsetMs', () => source.clockOffsetMs(peerId))
    live(member, 'addresses', () => source.addresses(peerId))
    live(member, 'health', () => source.health(peerId))
    return member
  }
}

function sameFacts (a: MemberFacts, b: MemberFacts): boolean {
  return a.state === b.state && a.since === b.since && a.incarnation === b.incarnation &&
    a.clockSkewed === b.clockSkewed && a.claims === b.claims
}

/** An enumerable field read from `get` on every read; assigning it makes it a plain value. */
function live<K extends keyof Member> (target: Member, key: K, get: () => Member[K]): void {
  Object.defineProperty(target, key, {
    enumerable: true,
    configurable: true,
    get,
    set: (value: Member[K]) => {
      Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
    }
  })
}
