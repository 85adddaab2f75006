import { TERM_STEP } from './lease.ts'
import { comparePrecedence } from './precedence.ts'
import type { MemberState } from '../membership/membership.ts'

/** A scheduler and its term. */
export interface Leader {
  peerId: string
  term: number
}

/** A zone member as the leader choice sees it. */
export interface ZoneMember {
  peerId: string
  state: MemberState
  /** a gateway or server whose clock agrees with its peers: it may hold the lease */
  eligible: boolean
  /** its clock disagrees with its peers': it neither holds the lease nor counts as an endorser */
  skewed?: boolean
  role?: string
}

/** A valid claim in the zone, and whether its lease holds right now in this node's view. */
export interface ClaimState extends Leader {
  live: boolean
}

export interface LeaderInput {
  /** valid claims of this zone's eligible members */
  claims: ClaimState[]
  /** endorser peer id → the scheduler it follows */
  endorsements: ReadonlyMap<string, string>
  /** the zone's members (every role), this node included */
  members: ZoneMember[]
  /** highest term this node has followed in the zone (kept across restarts) */
  floor: number
  /** the scheduler this node followed at its previous evaluation */
  current?: Leader
  /** how long this node has seen the zone without a scheduler; 0 while it has one */
  vacantForMs: number
  /** a claimant ranked k-th among live eligible nodes is entitled after k × this much vacancy */
  staggerMs: number
}

export interface LeaderChoice {
  leader?: Leader & { endorsements: number, established: boolean }
  /** the current scheduler's claim as it stands now, when it is still live and admitted */
  incumbent?: Leader & { endorsements: number, established: boolean }
  /** terms above `anchor + TERM_STEP` are not admitted; a new claim takes `anchor + 1` */
  anchor: number
}

/** Who claims a vacant zone first, the same on every node: servers before gateways, then by peer id. */
export function rank (m: { role?: string, peerId: string }): string {
  return `${m.role === 'server' ? 0 : 1}:${m.peerId}`
}

/** Endorsements a claim needs to be established: half the other live members, at least one (none when it is alone). */
export function establishedThreshold (others: number): number {
  return others === 0 ? 0 : Math.max(1, Math.ceil(others / 2))
}

/**
 * How many live eligible nodes rank ahead of `peerId` (a live lease counts
 * as a sign of life too, whatever membership thinks of its holder).
 */
export function positionOf (peerId: string, members: ZoneMember[], claims: ClaimState[]): number {
  const live = claims.filter(c => c.live).map(c => c.peerId)
  const me = members.find(m => m.peerId === peerId)
  if (me == null || !me.eligible) return Infinity
  const mine = rank(me)
  return members.filter(m => m.peerId !== peerId && m.eligible && (m.state === 'alive' || live.includes(m.peerId)) && rank(m) < mine).length
}

/**
 * The scheduler of one zone as this node sees it. Every node computes this
 * from the registry and its own liveness view, so nodes with the same view
 * agree; what differs between views (a partition, a node just back from a
 * stall) is settled by the endorsements as they spread.
 *
 * A claim counts when its lease is live, its term is admitted (at most
 * TERM_STEP above the anchor: the highest of this node's floor, its current
 * scheduler's term and the term of an established claim), and it is
 * credible: established (endorsed by half the other live members), this
 * node's current scheduler, entitled by rank (the best-ranked live eligible
 * node, or the next ones after a vacancy of `staggerMs` per place), or
 * endorsed at least as widely as the current scheduler (how two sides of a
 * healed partition settle). Credible claims are ordered by endorsements,
 * then by the one precedence rule (comparePrecedence).
 *
 * So a stolen gateway's claim, however high its term, counts for nothing
 * while a live scheduler holds the zone: it is not established, not
 * current, not entitled unless it ranks first, and endorsed by nobody.
 */
export function chooseLeader (input: LeaderInput): LeaderChoice {
  // evaluated for every zone several times a second: one pass over members and one over endorsements
  const live = new Set<string>()
  for (const m of input.members) if (m.state !== 'dead' && m.skewed !== true) live.add(m.peerId)
  const tally = new Map<string, number>()
  input.endorsements.forEach((follows, endorser) => {
    if (follows !== endorser && live.has(endorser)) tally.set(follows, (tally.get(follows) ?? 0) + 1)
  })
  const count = (peerId: string): number => tally.get(peerId) ?? 0
  const others = (peerId: string): number => live.size - (live.has(peerId) ? 1 : 0)
  const scored = input.claims.filter(c => c.live).map(c => {
    const endorsements = count(c.peerId)
    return { ...c, endorsements, established: endorsements >= establishedThreshold(others(c.peerId)) }
  })
  let anchor = Math.max(input.floor, input.current?.term ?? 0)
  for (const c of scored) if (c.established && c.endorsements > 0) anchor = Math.max(anchor, c.term)
  const admitted = scored.filter(c => c.term <= anchor + TERM_STEP)
  const current = input.current == null ? undefined : admitted.find(c => c.peerId === input.current!.peerId && c.term === input.current!.term)
  const currentEndorsements = current?.endorsements ?? 0
  const credible = admitted.filter(c => {
    if (c.established || c === current) return true
    if (c.endorsements > 0 && c.endorsements >= currentEndorsements) return true
    const position = positionOf(c.peerId, input.members, input.claims)
    return position === 0 || (position !== Infinity && input.vacantForMs >= position * input.staggerMs)
  })
  credible.sort((a, b) => b.endorsements - a.endorsements || comparePrecedence(a, b))
  const best = credible[0]
  const incumbent = current == null ? undefined : { peerId: current.peerId, term: current.term, endorsements: current.endorsements, established: current.established }
  if (best == null) return { anchor }
  return { leader: { peerId: best.peerId, term: best.term, endorsements: best.endorsements, established: best.established }, anchor, ...(incumbent == null ? {} : { incumbent }) }
}
