import { TypedEventEmitter } from '@libp2p/interface'
import { schedulerKey, zoneOf } from './keys.ts'
import { firstInPrecedence } from './precedence.ts'
import type { Member, MemberState, MembershipEvents } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { PeerId, Startable, TypedEventTarget } from '@libp2p/interface'
import type { Logger } from 'pino'

/** What a scheduler writes under `scheduler/<zone>/<peerId>` to claim its zone. */
export interface SchedulerClaim {
  term: number
  /** wall-clock ms when the claim was made */
  since: number
}

export interface Leader {
  peerId: string
  term: number
}

export interface ElectionEvents {
  'leader:change': CustomEvent<{ zone: string, leader: Leader | undefined, self: boolean }>
}

export interface ElectionComponents {
  peerId: PeerId
  registry: Pick<Registry, 'set' | 'delete' | 'list' | 'onChange'>
  membership: { members(): Member[], stateOf(peerId: string): MemberState } & Pick<TypedEventTarget<MembershipEvents>, 'addEventListener' | 'removeEventListener'>
  logger: Logger
}

export interface ElectionInit {
  /** this node's labels; its `zone` label picks the zone it schedules for */
  labels?: Record<string, string>
  /** whether this node may become a scheduler. @default true */
  eligible?: boolean
  /** @default 250 */
  checkIntervalMs?: number
  /**
   * Do not claim until this long after start: a fresh agent has heard no
   * heartbeats yet and would otherwise see itself as the only live node.
   * @default 3000
   */
  settleMs?: number
  /**
   * This node has peers to join (bootstrap or mDNS configured): past
   * `settleMs` it still claims nothing until it has heard from at least one
   * other member, or until this long after start. Agents started together
   * on a slow machine otherwise each claim before meeting anyone.
   * @default 0 (no wait)
   */
  joinMs?: number
}

/** Roles that may schedule: the coordinator stays out so the mesh never depends on it. */
const ELIGIBLE_ROLES = new Set(['server', 'gateway'])

/** Who claims a vacant zone, the same on every node: servers before gateways, then by peer id. */
function rank (m: Pick<Member, 'role' | 'peerId'>): string {
  return `${m.role === 'server' ? 0 : 1}:${m.peerId}`
}

/**
 * Scheduler election, one per zone and connected part of the mesh. A
 * claim is a lease held for as long as its writer stays alive (membership
 * heartbeats renew it); the live claim with the highest term is the active
 * scheduler. When no live claim exists, the best-ranked live eligible node
 * claims with a term above every term it has seen, so terms only grow. When
 * partitions heal, the lower term steps down by deleting its claim.
 */
export class Election extends TypedEventEmitter<ElectionEvents> implements Startable {
  readonly #c: ElectionComponents
  readonly #self: string
  readonly zone: string
  readonly #eligible: boolean
  readonly #checkIntervalMs: number
  readonly #settleMs: number
  readonly #joinMs: number
  #startedAt = 0
  #timer?: NodeJS.Timeout
  #off?: () => void
  #leader: Leader | undefined
  #claiming = false

  constructor (components: ElectionComponents, init: ElectionInit = {}) {
    super()
    this.#c = components
    this.#self = components.peerId.toString()
    this.zone = zoneOf(init.labels)
    this.#eligible = init.eligible ?? true
    this.#checkIntervalMs = init.checkIntervalMs ?? 250
    this.#settleMs = init.settleMs ?? 3000
    this.#joinMs = init.joinMs ?? 0
  }

  async start (): Promise<void> {
    this.#startedAt = performance.now()
    // a claim left on disk from before a restart is not a lease: the others
    // may have elected someone meanwhile. Start over.
    for (const c of this.#claims()) {
      if (c.peerId === this.#self) await this.#c.registry.delete(schedulerKey(this.zone, this.#self))
    }
    this.#off = this.#c.registry.onChange(`scheduler/${this.zone}/`, () => { this.check() })
    this.#c.membership.addEventListener('member:state', this.#onMember)
    this.#timer = setInterval(() => { this.check() }, this.#checkIntervalMs)
    this.check()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    this.#off?.()
    this.#c.membership.removeEventListener('member:state', this.#onMember)
    if (this.#leader?.peerId === this.#self) {
      await this.#c.registry.delete(schedulerKey(this.zone, this.#self)).catch(() => {})
    }
  }

  /** The active scheduler of this node's zone, as this node sees it. */
  leader (): Leader | undefined {
    return this.#leader
  }

  isLeader (): boolean {
    return this.#leader?.peerId === this.#self
  }

  /** Highest term written in this zone, live or not. */
  highestTerm (): number {
    return Math.max(0, ...this.#claims().map(c => c.term))
  }

  check (): void {
    const claims = this.#claims()
    // a suspect holder still holds its lease: SWIM suspicion is an accusation
    // it may refute (it is how a healed partition's old news arrives), so
    // only a confirmed death frees the zone
    const live = claims.filter(c => this.#c.membership.stateOf(c.peerId) !== 'dead')
    const active = firstInPrecedence(live)
    const leader = active == null ? undefined : { peerId: active.peerId, term: active.term }
    if (leader?.peerId !== this.#leader?.peerId || leader?.term !== this.#leader?.term) {
      this.#leader = leader
      const self = leader?.peerId === this.#self
      this.#c.logger.info({ zone: this.zone, leader: leader?.peerId, term: leader?.term, self }, leader == null ? 'no scheduler' : 'scheduler elected')
      this.safeDispatchEvent('leader:change', { detail: { zone: this.zone, leader, self } })
    }
    const mine = claims.find(c => c.peerId === this.#self)
    if (mine != null && leader != null && leader.peerId !== this.#self) {
      // someone with a higher term holds the zone: step down
      this.#c.registry.delete(schedulerKey(this.zone, this.#self)).catch(() => {})
      return
    }
    const age = performance.now() - this.#startedAt
    if (leader != null || !this.#eligible || this.#claiming || age < this.#settleMs) return
    const members = this.#c.membership.members()
    if (age < this.#joinMs && !members.some(m => m.peerId !== this.#self && m.state === 'alive')) return
    const best = members
      .filter(m => m.state === 'alive' && m.role != null && ELIGIBLE_ROLES.has(m.role) && zoneOf(m.labels) === this.zone)
      .sort((a, b) => rank(a) < rank(b) ? -1 : 1)[0]
    if (best?.peerId !== this.#self) return
    const claim: SchedulerClaim = { term: this.highestTerm() + 1, since: Date.now() }
    this.#claiming = true
    this.#c.registry.set(schedulerKey(this.zone, this.#self), claim)
      .catch(err => { this.#c.logger.warn({ err: err.message }, 'claiming the scheduler lease failed') })
      // the claim's own registry change re-runs check(); a failure waits for the next tick
      .finally(() => { this.#claiming = false })
  }

  #claims (): Array<SchedulerClaim & { peerId: string }> {
    return this.#c.registry.list<SchedulerClaim>(`scheduler/${this.zone}/`).flatMap(e => {
      const peerId = e.key.split('/')[2]
      if (peerId == null || e.value == null || typeof e.value.term !== 'number') return []
      return [{ ...e.value, peerId }]
    })
  }

  readonly #onMember = (): void => { this.check() }
}
