import { TypedEventEmitter } from '@libp2p/interface'
import type { Role } from '../../node/identity/certificate.ts'
import type { HealthRecord, Member, MemberState, MembershipEvents } from '../../node/membership/membership.ts'

export interface FakeMember {
  id: string
  role: Role
  labels?: Record<string, string>
}

/**
 * A membership view a test controls: who this observer thinks is alive,
 * whose clock is off, and each member's health. Same shape as the real
 * Membership for election, scheduler and router.
 */
export class FakeMembership extends TypedEventEmitter<MembershipEvents> {
  readonly states = new Map<string, MemberState>()
  readonly skewed = new Set<string>()
  readonly health = new Map<string, Partial<HealthRecord>>()
  readonly self: string
  readonly all: () => FakeMember[]

  constructor (self: string, all: () => FakeMember[]) {
    super()
    this.self = self
    this.all = all
  }

  members (): readonly Member[] {
    return this.all().map(({ id, role, labels }) => {
      const member: Member = { peerId: id, self: id === this.self, role, labels: labels ?? {}, addresses: [], state: this.stateOf(id), lastSeenMs: 0, since: 0 }
      if (this.skewed.has(id)) member.clockSkewed = true
      const health = this.health.get(id)
      if (health != null) member.health = health as HealthRecord
      return member
    })
  }

  stateOf (id: string): MemberState { return id === this.self ? 'alive' : this.states.get(id) ?? 'alive' }

  set (id: string, state: MemberState): void {
    const previous = this.stateOf(id)
    this.states.set(id, state)
    this.safeDispatchEvent('member:state', { detail: { peerId: id, state, previous } })
  }
}
