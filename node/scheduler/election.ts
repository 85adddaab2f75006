import { TypedEventEmitter } from '@libp2p/interface'
import { electionTiming, type ElectionInit, type ElectionTiming } from './election-timing.ts'
import { zoneOf } from './keys.ts'
import { MAX_LEASE_MS, MAX_TERM, parseScheduleKey, parseScheduleRecord, type Endorsement, type SchedulerClaim } from './lease.ts'
import { OwnKey } from './own-key.ts'
import { StallWatch } from './stall.ts'
import { MemoryTermStore, remember, type TermStore, type ZoneMemory } from './terms.ts'
import { summarisedLeader } from './zone-summary.ts'
import { eligibleOf, ZoneView } from './zone-view.ts'
import { ZoneGrouping } from './zone-grouping.ts'
import { ENDORSE_PREFIX, ZONE_SUMMARY_PREFIX } from '../../protocols/registry/zones.ts'
import type { Leader, ZoneMember } from './leader.ts'
import type { PlacementAuthority } from './placements.ts'
import type { Member, MembershipEvents } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { RegistryChange } from '../registry/watch.ts'
import type { PeerId, Startable, TypedEventTarget } from '@libp2p/interface'
import type { Logger } from 'pino'

export type { Leader, SchedulerClaim, Endorsement, ElectionInit }
export { DEFAULT_LEASE_MS, DEFAULT_RENEW_INTERVAL_MS } from './election-timing.ts'

export interface ElectionEvents {
  'leader:change': CustomEvent<{ zone: string, leader: Leader | undefined, self: boolean }>
}

export interface ElectionComponents {
  peerId: PeerId
  /** `zones`: whose zone-local `scheduler/` entries this node keeps (else every zone's) */
  registry: Pick<Registry, 'set' | 'delete' | 'list' | 'onChange'> & Partial<Pick<Registry, 'zones'>>
  /** this node's labels as peers believe them (its certificate's), read at start: the zone it schedules. @default init.labels */
  labels?: () => Record<string, string> | undefined
  membership: { members(): readonly Member[] } & Pick<TypedEventTarget<MembershipEvents>, 'addEventListener' | 'removeEventListener'>
  logger: Logger
  /** floors and followed schedulers, kept across restarts. @default in memory */
  store?: TermStore
  /** Lifeguard-style local health (membership provides it); an unhealthy node claims nothing. */
  localHealth?: () => { healthy: boolean }
  /** monotonic ms clock. @default performance.now */
  monotonic?: () => number
}

/** Zones followed at most (from members' labels); claims in others are ignored. */
const MAX_ZONES = 256
/**
 * Zones known from their summaries are read again at least this often,
 * changed or not. A safety net only: what a summarised leader depends on
 * (summaries, endorsements, members' states) is re-read when it changes.
 * Every 5 s, at 25 zones, the re-reads were a tenth of an idle agent's
 * main thread.
 */
const SUMMARY_RECHECK_MS = 30_000

/**
 * Scheduler election, one per zone and connected part of the mesh. The
 * scheduler holds a lease: a claim `scheduler/<zone>/<self>` it renews every
 * `renewIntervalMs`; every other node writes there the scheduler it follows.
 * Who leads is chosen by `chooseLeader` (leader.ts) from live leases and
 * those endorsements, the same on every node with the same view.
 *
 * Leases are timed by arrival on each observer's monotonic clock, so clock
 * skew does not matter, and the holder stops calling itself scheduler
 * (`isLeader`) earlier than anyone else may take over: from the start of
 * its last renewal, not its arrival, and a margin short of the lease. A
 * node that notices it was stalled (its own checks ran late) doubts its
 * view and claims nothing for `deferMs`, so a follower's stall never moves
 * the role; a scheduler back from a stall longer than its lease keeps its
 * claim on probation, says it schedules only after it has had time to hear
 * of a successor, and gives way to one.
 *
 * Every node also follows the other zones it sees, without taking part, so
 * placements of any zone can be judged (`leaderOf`, `followed`): leases are
 * zone-local, so outside a zone (coordinators keep every zone's) its
 * scheduler is the one its summary names (`summarisedLeader`).
 */
export class Election extends TypedEventEmitter<ElectionEvents> implements Startable, PlacementAuthority {
  readonly #c: ElectionComponents
  readonly #self: string
  #zone: string
  readonly #eligible: boolean
  readonly #t: ElectionTiming
  readonly #mono: () => number
  readonly #store: TermStore
  readonly #zones = new Map<string, ZoneView>()
  #stall: StallWatch
  #startedAt = 0
  #deferUntil = 0
  #timer?: NodeJS.Timeout
  #off?: () => void
  #offSummaries?: () => void
  readonly #grouping = new ZoneGrouping()
  #summariesAt = -Infinity
  #key: OwnKey
  #evaluateScheduled = false
  #saving: Promise<void> = Promise.resolve()
  #started = false

  constructor (components: ElectionComponents, init: ElectionInit = {}) {
    super()
    this.#c = components
    this.#self = components.peerId.toString()
    this.#zone = zoneOf(init.labels)
    this.#eligible = init.eligible ?? true
    this.#t = electionTiming(init)
    this.#mono = components.monotonic ?? (() => performance.now())
    this.#store = components.store ?? new MemoryTermStore()
    this.#stall = new StallWatch(this.#t.checkIntervalMs, this.#t.stallThresholdMs, this.#mono())
    this.#key = this.#ownKey()
  }

  /** This node's zone (its certificate's once started). */
  get zone (): string {
    return this.#zone
  }

  #ownKey (): OwnKey {
    return new OwnKey({
      registry: this.#c.registry,
      zone: this.#zone,
      self: this.#self,
      logger: this.#c.logger,
      timing: this.#t,
      onWritten: () => { this.#scheduleEvaluate() }
    })
  }

  async start (): Promise<void> {
    // the zone peers believe (the certificate's), not the one the config asks for
    const labels = this.#c.labels?.()
    if (labels != null && zoneOf(labels) !== this.#zone) {
      this.#zone = zoneOf(labels)
      this.#key = this.#ownKey()
    }
    for (const [zone, memory] of await this.#store.load()) this.#zoneState(zone, memory)
    this.#zoneState(this.zone)
    this.#startedAt = this.#mono()
    this.#stall = new StallWatch(this.#t.checkIntervalMs, this.#t.stallThresholdMs, this.#startedAt)
    this.#started = true
    for (const e of this.#c.registry.list('scheduler/')) this.#record(e.key, e.value, e.deleted, false)
    // a claim left on disk from before a restart is not a lease: the others
    // may have elected someone meanwhile. Start over.
    if (this.#key.value === 'claim') await this.#key.remove()
    this.#off = this.#c.registry.onChange('scheduler/', this.#onChange)
    const offSummaries = this.#c.registry.onChange(ZONE_SUMMARY_PREFIX, this.#onSummary)
    const offEndorsements = this.#c.registry.onChange(ENDORSE_PREFIX, this.#onSummary)
    this.#offSummaries = () => { offSummaries(); offEndorsements() }
    this.#c.membership.addEventListener('member:state', this.#onMember)
    this.#timer = setInterval(() => { this.tick() }, this.#t.checkIntervalMs)
    this.tick()
  }

  async stop (): Promise<void> {
    this.#started = false
    clearInterval(this.#timer)
    this.#off?.()
    this.#offSummaries?.()
    this.#c.membership.removeEventListener('member:state', this.#onMember)
    if (this.#key.mine != null) await this.#key.remove()
    await this.#saving
  }

  /** The active scheduler of this node's zone, as this node sees it. */
  leader (): Leader | undefined {
    const l = this.#own().current
    if (l == null || (l.peerId === this.#self && !this.isLeader())) return undefined
    return { peerId: l.peerId, term: l.term }
  }

  /**
   * Whether this node is its zone's scheduler right now: chosen, its claim
   * established (endorsed by half the other live members), its lease still
   * valid by its own clock, and its event loop not stalled at this moment.
   * Computed at the call, so an API request answered right after SIGCONT,
   * before any timer ran, already says no.
   */
  isLeader (): boolean {
    const l = this.#own().current
    const mine = this.#key.mine
    if (l == null || mine == null || l.peerId !== this.#self || l.term !== mine.term) return false
    // once established, endorsements that lapse (a member deferring after a stall, a key
    // rewritten behind its owner's back) do not unseat it: only a claim ahead of it does
    if (!l.established && mine.confirmed !== true) return false
    const now = this.#mono()
    return now < mine.validUntil && now >= (mine.probationUntil ?? 0) && !this.#stall.overdue(now)
  }

  /** The scheduler this node follows in `zone` (any zone it sees). */
  leaderOf (zone: string): Leader | undefined {
    const l = this.#zones.get(zone)?.current
    return l == null ? undefined : { peerId: l.peerId, term: l.term }
  }

  /** Schedulers this node followed in `zone`, newest first. */
  followed (zone: string): readonly Leader[] {
    return this.#zones.get(zone)?.memory.followed ?? []
  }

  /** Details for the status API. */
  status (): { zone: string, leader: string | null, term: number | null, self: boolean, established: boolean, endorsements: number, deferring: boolean } {
    const l = this.leader()
    const current = this.#own().current
    return {
      zone: this.zone,
      leader: l?.peerId ?? null,
      term: l?.term ?? null,
      self: this.isLeader(),
      established: l != null && current?.established === true,
      endorsements: l != null ? current?.endorsements ?? 0 : 0,
      deferring: this.#distrusting(this.#mono())
    }
  }

  /** Run one check now: notice stalls, re-evaluate every zone, renew, claim, endorse or step down. */
  tick (): void {
    if (!this.#started) return
    this.#noticeStall()
    this.#evaluate()
  }

  #evaluate (): void {
    const now = this.#mono()
    const members = this.#c.membership.members()
    const grouped = this.#grouping.of(members)
    const zones = new Set([this.zone])
    for (const zone of grouped.keys()) if (zones.size < MAX_ZONES) zones.add(zone)
    const kept = this.#c.registry.zones?.()
    const keeps = (zone: string): boolean => kept == null || kept.followsAll || zone === this.zone || kept.following.includes(zone)
    // a zone known from its summaries changes only with its summary, one of its endorsements or
    // one of its members' state: read it again then (and every zone every SUMMARY_RECHECK_MS), not on every check
    if (now - this.#summariesAt >= SUMMARY_RECHECK_MS) {
      this.#grouping.allChanged()
      this.#summariesAt = now
    }
    const changed = this.#grouping.take()
    for (const zone of zones) {
      const leases = keeps(zone)
      if (leases || changed === 'all' || changed.has(zone)) this.#evaluateZone(zone, grouped.get(zone) ?? [], now, leases)
    }
    // zones no member is in any more (or never was) are dropped, memory and all
    for (const zone of this.#zones.keys()) if (!zones.has(zone)) this.#zones.delete(zone)
    this.#act(members, grouped.get(this.zone) ?? [], now)
  }

  /** Choose `zone`'s scheduler: from its leases where this node keeps them, else from its summaries. */
  #evaluateZone (zone: string, inZone: ZoneMember[], now: number, leases: boolean): void {
    const z = this.#zoneState(zone)
    const held = this.#key.mine
    const mine = zone === this.zone && held != null ? { term: held.term, live: now < Math.max(held.validUntil, held.probationUntil ?? 0) } : undefined
    const changed = leases
      ? z.choose(inZone, this.#self, mine, now, this.#t.staggerMs, this.#t.tieHoldMs)
      : z.adopt(summarisedLeader(this.#c.registry, zone, eligibleOf(inZone), eligibleOf(inZone, 'alive')))
    const leader = z.current
    if (!changed) return
    const self = leader?.peerId === this.#self
    this.#c.logger.info({ zone, leader: leader?.peerId, term: leader?.term, endorsements: leader?.endorsements, self }, leader == null ? 'no scheduler' : 'scheduler chosen')
    if (leader != null) {
      z.memory = remember(z.memory, { peerId: leader.peerId, term: leader.term })
      const memory = z.memory
      this.#saving = this.#saving.then(async () => { await this.#store.save(zone, memory) })
        .catch(err => { this.#c.logger.warn({ err: err.message }, 'saving the election memory failed') })
    }
    this.safeDispatchEvent('leader:change', { detail: { zone, leader: leader == null ? undefined : { peerId: leader.peerId, term: leader.term }, self } })
  }

  /** This node's part in its own zone (`ownZone`, from the fleet's `members`): renew, step down, claim, or endorse. */
  #act (members: readonly Member[], ownZone: ZoneMember[], now: number): void {
    const z = this.#own()
    const leader = z.current
    const mine = this.#key.mine
    const doubt = this.#doubt(now, members)
    const deferring = doubt != null
    if (mine != null) {
      // the claim is being written: it is not live yet, which is no reason to give it up
      if (mine.validUntil === -Infinity) return
      if (leader?.peerId === this.#self && leader.term === mine.term) {
        // established by endorsements, not merely by being alone: a node that
        // claimed before it heard anyone (a slow start, a partition at boot)
        // must still give way to a better-ranked claimant once it hears one
        if (leader.established && leader.endorsements > 0) mine.confirmed = true
        // two claimed the vacancy (their views of who is alive differed): until
        // established, the one ranked behind gives way at once
        const better = mine.confirmed === true ? undefined : z.claimantAhead(ownZone, this.#self, now)
        if (better != null) {
          this.#c.logger.info({ zone: this.zone, term: mine.term, ahead: better }, 'a better-ranked node claimed too: giving way')
          this.#key.stepDown(undefined, now)
          return
        }
        if (now - mine.renewedAt >= this.#t.renewIntervalMs) this.#key.renew(mine, now)
        return
      }
      // someone else leads, or this lease lapsed (a stall longer than the lease): step down
      this.#c.logger.info({ zone: this.zone, term: mine.term, leader: leader?.peerId }, 'stepping down as scheduler')
      this.#key.stepDown(leader == null || deferring ? undefined : leader, now)
      return
    }
    if (leader == null) {
      if (this.#key.value === 'claim') this.#key.endorse(undefined, now, false)
      const age = now - this.#startedAt
      // a node with peers to join that has met none yet would only claim against its own ignorance
      const alone = age < this.#t.joinMs && !members.some(m => m.peerId !== this.#self && m.state === 'alive')
      const settling = age < this.#t.settleMs || alone
      if (!settling && this.#eligible && this.#entitled(ownZone, now) && (!deferring || (doubt === 'health' && this.#failoverDespiteHealth(members, ownZone, now)))) this.#claim(z.anchor + 1, now)
      return
    }
    if (leader.peerId === this.#self) return
    // follow: say so, unless this node cannot trust its own view right now
    const key = this.#key
    if (key.value === 'claim' || (!deferring && (key.value !== 'endorsement' || key.endorsement !== leader.peerId))) {
      key.endorse(deferring ? undefined : leader, now, false)
    }
  }

  /** Whether this node would be entitled to claim its vacant zone now (rank, stagger). */
  #entitled (ownZone: ZoneMember[], now: number): boolean {
    return this.#own().entitled(ownZone, this.#self, now, this.#t.staggerMs)
  }

  /**
   * Whether this node should doubt its own view: just back from a stall,
   * unhealthy by its membership's measure, or told its clock disagrees with
   * its peers'. Such a node claims nothing and changes no endorsement.
   */
  #distrusting (now: number, members?: Member[]): boolean {
    return this.#doubt(now, members) != null
  }

  /** Why this node doubts its own view right now, if it does. */
  #doubt (now: number, members?: readonly Member[]): 'stall' | 'clock' | 'health' | undefined {
    if (now < this.#deferUntil) return 'stall'
    const self = (members ?? this.#c.membership.members()).find(m => m.peerId === this.#self)
    if (self?.clockSkewed === true) return 'clock'
    try {
      if (this.#c.localHealth?.().healthy === false) return 'health'
    } catch {}
    return undefined
  }

  /**
   * Degraded local health alone does not hold back a failover: the scheduler
   * this node followed has let its lease lapse, the failure detector holds it
   * suspect or dead (a verdict the others' probes reach, not this node's own
   * timers), and this node is first in line. Under CPU starvation a node's
   * health stays degraded for tens of seconds, and the nodes ranked behind it
   * wait out their stagger meanwhile, so holding back would leave the zone
   * without a scheduler that long (and a scheduler stopped for 5 s would come
   * back to its own role). The caller asks only when health is the node's
   * one doubt (not after a stall of its own, not with a skewed clock); at start-up, with no scheduler followed yet, health still holds it
   * back. The claim still needs the others' endorsements before this node
   * schedules.
   */
  #failoverDespiteHealth (members: readonly Member[], ownZone: ZoneMember[], now: number): boolean {
    const z = this.#own()
    const last = z.memory.followed[0]
    if (last == null || last.peerId === this.#self) return false
    if (members.find(m => m.peerId === last.peerId)?.state === 'alive') return false
    return z.firstInLine(ownZone, this.#self, now)
  }

  #claim (term: number, now: number): void {
    if (term > MAX_TERM) {
      this.#c.logger.error({ zone: this.zone, term }, 'cannot claim: the term would pass its maximum')
      return
    }
    this.#key.claim(term, now)
  }

  /**
   * Back from a stall, this node's view is stale: what expired meanwhile may
   * have been renewed unheard, and whoever was elected meanwhile has not
   * reached it yet. It claims nothing and endorses no one new for `deferMs`,
   * its settling and vacancy clocks skip the stall, and a scheduler whose own
   * lease lapsed during it keeps its claim on probation: it renews, but says
   * it schedules only once it has had time to hear of a successor.
   */
  #noticeStall (): void {
    const now = this.#mono()
    const late = this.#stall.check(now)
    if (late === 0) return
    this.#deferUntil = now + this.#t.deferMs
    this.#startedAt += late
    for (const z of this.#zones.values()) z.skipVacancy(late, now)
    const mine = this.#key.mine
    if (mine != null && now >= mine.validUntil) mine.probationUntil = now + 2 * this.#t.renewIntervalMs + this.#t.checkIntervalMs
    this.#c.logger.warn({ lateMs: Math.round(late), deferMs: this.#t.deferMs }, 'this node was stalled: deferring to the current scheduler')
  }

  #zoneState (zone: string, memory?: ZoneMemory): ZoneView {
    let z = this.#zones.get(zone)
    if (z == null) {
      z = new ZoneView(zone, memory)
      this.#zones.set(zone, z)
      // a zone seen for the first time (a member with a new zone label): take in what the registry holds for it
      if (this.#started) for (const e of this.#c.registry.list(`scheduler/${zone}/`)) this.#record(e.key, e.value, e.deleted, false)
    }
    return z
  }

  #own (): ZoneView {
    return this.#zoneState(this.zone)
  }

  /** Fold one `scheduler/…` entry into the lease and endorsement tables. */
  #record (key: string, value: unknown, deleted: boolean, fresh: boolean): void {
    const k = parseScheduleKey(key)
    if (k == null) return
    const record = deleted ? undefined : parseScheduleRecord(value)
    if (k.peerId === this.#self && k.zone === this.zone) this.#key.note(record, deleted)
    // zones are those of members (created in #evaluate); a claim in a zone nobody is in is not followed
    if (k.peerId === this.#self && record?.kind === 'claim') return
    this.#zones.get(k.zone)?.fold(k.peerId, record, deleted, fresh, this.#mono())
  }

  readonly #onChange = (change: RegistryChange): void => {
    this.#noticeStall()
    const value = change.entry.value as { leaseMs?: unknown } | undefined
    // anti-entropy hands over whatever was last written, however old: only a
    // recent write (by its writer's clock) is a renewal
    const leaseMs = typeof value?.leaseMs === 'number' ? Math.min(MAX_LEASE_MS, value.leaseMs) : this.#t.leaseMs
    const fresh = change.via !== 'sync' || Date.now() - change.entry.ts[0] <= leaseMs
    this.#record(change.key, change.entry.value, change.entry.deleted, fresh)
    this.#scheduleEvaluate()
  }

  readonly #onMember = (event: MembershipEvents['member:state']): void => {
    this.#grouping.memberChanged(event.detail.peerId)
    this.#scheduleEvaluate()
  }

  readonly #onSummary = (change: RegistryChange): void => {
    this.#grouping.keyChanged(change.key)
    this.#scheduleEvaluate()
  }

  /** Evaluate soon, once for any number of changes; never inside the registry's change callback. */
  #scheduleEvaluate (): void {
    if (this.#evaluateScheduled || !this.#started) return
    this.#evaluateScheduled = true
    setImmediate(() => {
      this.#evaluateScheduled = false
      if (!this.#started) return
      this.#noticeStall()
      this.#evaluate()
    })
  }
}
