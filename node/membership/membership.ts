import { TypedEventEmitter } from '@libp2p/interface'
import { MAX_ADDR_CHARS, MAX_ADDRS, type MemberRecord } from '../../protocols/swim/wire.ts'
import { LocalHealth, StallWatch, type LocalHealthState } from './awareness.ts'
import { MemberListing } from './listing.ts'
import { BroadcastQueue } from './broadcasts.ts'
import { firstIncarnation } from './incarnation.ts'
import { Prober, shuffle } from './prober.ts'
import { RecordVerifier } from './records.ts'
import { RecordAudit, type NodeRecord } from './roster.ts'
import { ClockWatch } from './skew.ts'
import { retransmitLimit, suspicionTimeoutMs } from './suspicion.ts'
import { MemberTable, type MemberState, type Via } from './table.ts'
import { DEFAULT_PROBE_INTERVAL_MS, type Member, type MembershipComponents, type MembershipEvents, type MembershipInit } from './types.ts'
import type { SelfClock } from './clock.ts'
import type { NodeClaims } from '../identity/certificate.ts'
import type { HealthRecord } from './health.ts'
import type { TransportHandler } from './transport.ts'
import type { Startable } from '@libp2p/interface'

export type { MemberState } from './table.ts'
export type { NodeRecord } from './roster.ts'
export type { HealthRecord } from './health.ts'
export type { LocalHealthState } from './awareness.ts'
export type { SelfClock } from './clock.ts'
export { levelIncarnationStore, type IncarnationStore } from './incarnation.ts'
export { DEFAULT_PROBE_INTERVAL_MS, type Member, type MemberTrust, type MembershipComponents, type MembershipEvents, type MembershipInit, type MembershipMetrics } from './types.ts'

const HOUSEKEEPING_MS = 1000
/** Housekeeping rounds between sweeps of members whose certificate is no longer valid. */
const SWEEP_EVERY = 3
const PUSH_PULL_TIMEOUT_MS = 10_000
/** Ask the same peer for a push-pull at most this often on (re)connection. */
const PUSH_PULL_RETRY_MS = 2000
const MAX_STRANGERS = 256
/** A member whose certificate we lack is dialled for it only this long after its alive claim arrived. */
const STRANGER_GRACE_MS = 3000
/** A member dead this long, with no node record left, is forgotten. */
const FORGET_DEAD_MS = 60 * 60_000
/** A registry write this recent from a member held dead is worth a probe. */
const FRESH_WRITE_MS = 30_000
/** Local-health points one stall adds, however long it was. */
const STALL_SCORE_MAX = 2

/**
 * Fleet membership and failure detection, off the registry: SWIM probing
 * with indirect probes and incarnation-numbered suspicion, membership
 * changes piggybacked on probes and gossiped only while they are news,
 * Lifeguard's local health awareness, and clock offsets from the probes.
 * Only members with a valid, unrevoked fleet certificate take part; their
 * role and labels come from that certificate.
 */
export class Membership extends TypedEventEmitter<MembershipEvents> implements Startable {
  readonly #c: MembershipComponents
  readonly #self: string
  readonly #init: Required<Omit<MembershipInit, 'monotonic'>>
  readonly #mono: () => number
  readonly #health: LocalHealth
  readonly #stall: StallWatch
  readonly #queue: BroadcastQueue
  readonly #verifier = new RecordVerifier()
  readonly #clock: ClockWatch
  readonly #table: MemberTable
  readonly #prober: Prober
  readonly #audit: RecordAudit
  /** alive claims of members we cannot admit yet (no certificate), and how they came */
  readonly #strangers = new Map<string, { record: MemberRecord, via: Via, at: number }>()
  /** the member objects `members()` hands out, kept while unchanged */
  readonly #listing: MemberListing
  /** wall-clock ms since when this node is alive: its own member's `since` */
  #aliveSince = Date.now()
  readonly #pushPulledAt = new Map<string, number>()
  #nextPushPull = 0
  #timer?: NodeJS.Timeout
  #off: Array<() => void> = []
  #started = false

  constructor (components: MembershipComponents, init: MembershipInit = {}) {
    super()
    this.#c = components
    this.#self = components.peerId.toString()
    this.#listing = new MemberListing(this.#self, {
      lastSeenMs: id => {
        if (id === this.#self) return 0
        const heard = this.#table.entries.get(id)?.lastHeard
        return heard == null ? null : Math.round(this.#mono() - heard)
      },
      clockOffsetMs: id => id === this.#self ? this.#clock.self.offsetMs : this.#clock.of(id)?.offsetMs ?? null,
      addresses: id => this.#addrsOf(id),
      health: id => this.#c.registry.value<HealthRecord>(`health/${id}`)
    })
    this.#init = {
      probeIntervalMs: init.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS,
      probeTimeoutMs: init.probeTimeoutMs ?? 500,
      indirectChecks: init.indirectChecks ?? 3,
      probeSuccessors: init.probeSuccessors ?? 3,
      suspicionMult: init.suspicionMult ?? 1,
      suspicionMaxMult: init.suspicionMaxMult ?? 6,
      suspicionConfirmations: init.suspicionConfirmations ?? 3,
      retransmitMult: init.retransmitMult ?? 4,
      gossipIntervalMs: init.gossipIntervalMs ?? 200,
      gossipNodes: init.gossipNodes ?? 3,
      pushPullIntervalMs: init.pushPullIntervalMs ?? 30_000,
      awarenessMaxMultiplier: init.awarenessMaxMultiplier ?? 8,
      clockSkewLimitMs: init.clockSkewLimitMs ?? 15_000,
      stallThresholdMs: init.stallThresholdMs ?? 2 * (init.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS)
    }
    this.#mono = init.monotonic ?? (() => performance.now())
    const logger = components.logger
    this.#health = new LocalHealth({ maxMultiplier: this.#init.awarenessMaxMultiplier })
    this.#stall = new StallWatch(late => { this.#onStall(late) }, { thresholdMs: this.#init.stallThresholdMs, monotonic: this.#mono })
    this.#queue = new BroadcastQueue(() => retransmitLimit(this.#init.retransmitMult, this.#size()))
    this.#clock = new ClockWatch({
      logger,
      onSelf: (clock, changed) => {
        components.metrics?.clockSelf(clock)
        if (changed) this.safeDispatchEvent('clock:skew', { detail: clock })
      }
    }, { limitMs: this.#init.clockSkewLimitMs, monotonic: this.#mono })
    this.#table = new MemberTable({
      self: this.#self,
      privateKey: components.privateKey,
      verifier: this.#verifier,
      admits: id => this.#admits(id),
      health: this.#health,
      stall: this.#stall,
      queue: this.#queue,
      suspicion: () => {
        const n = this.#size()
        const min = suspicionTimeoutMs(this.#init.suspicionMult, n, this.#init.probeIntervalMs)
        // too few others to confirm anything: the minimum is all we can hope for
        const k = n - 2 < this.#init.suspicionConfirmations ? 0 : this.#init.suspicionConfirmations
        return { minMs: min, maxMs: min * this.#init.suspicionMaxMult, k }
      },
      postponeMs: () => this.#health.scale(this.#init.probeIntervalMs),
      onState: (id, state, previous, reason) => { this.#onState(id, state, previous, reason) },
      onReject: (err, from) => { this.#reject(err, from) },
      onStranger: (record, via) => {
        if (this.#strangers.size < MAX_STRANGERS) this.#strangers.set(record.id, { record, via, at: this.#strangers.get(record.id)?.at ?? this.#mono() })
      },
      onIncarnation: inc => { components.incarnations?.save(inc).catch(err => { logger.warn({ err: err.message }, 'saving the incarnation failed') }) },
      logger,
      monotonic: this.#mono
    })
    this.#prober = new Prober({
      self: this.#self,
      privateKey: components.privateKey,
      table: this.#table,
      transport: components.transport,
      health: this.#health,
      stall: this.#stall,
      queue: this.#queue,
      verifier: this.#verifier,
      clock: this.#clock.offsets,
      addrsOf: id => this.#addrsOf(id),
      logger,
      monotonic: this.#mono,
      onProbe: result => { components.metrics?.probe(result) },
      onReject: (err, from) => { this.#reject(err, from) }
    }, this.#init)
    this.#audit = new RecordAudit({ self: this.#self, trust: components.trust, logger, metrics: components.metrics })
    this.#health.addEventListener('health:local', evt => {
      const { score, healthy, reason } = evt.detail
      logger[healthy ? 'info' : 'warn']({ score, reason }, healthy ? 'local health recovered' : 'local health degraded: slowing probes and deferring verdicts')
      this.safeDispatchEvent('health:local', { detail: { score, healthy } })
    })
    this.#health.addEventListener('health:score', evt => { components.metrics?.localHealth(evt.detail.score) })
  }

  get probeIntervalMs (): number {
    return this.#init.probeIntervalMs
  }

  async start (): Promise<void> {
    const saved = await this.#c.incarnations?.load().catch(() => undefined)
    await this.#table.init(this.#ownAddrs(), firstIncarnation(saved))
    this.#queue.push(this.#table.self)
    for (const { key, value } of this.#c.registry.list<Partial<NodeRecord>>('node/')) this.#onNodeRecord(key.slice(5), value)
    this.#off.push(this.#c.registry.onChange('node/', change => {
      if (!change.entry.deleted) this.#onNodeRecord(change.key.slice(5), change.entry.value as Partial<NodeRecord> | undefined)
    }))
    // a fresh signed write from a member we hold suspect or dead hints that it is back
    // (after a partition heals, registry news can beat membership news): probe it now
    this.#off.push(this.#c.registry.onChange('', change => {
      if (change.via === 'local' || change.entry.writer === this.#self) return
      if (Math.abs(Date.now() - change.entry.ts[0]) > FRESH_WRITE_MS) return
      if (this.#table.entries.get(change.entry.writer)?.state !== 'alive') this.#prober.recheck(change.entry.writer)
    }))
    await this.#c.transport.start(this.#handler)
    this.#started = true
    this.#aliveSince = Date.now()
    this.#listed = undefined
    this.#stall.start()
    this.#prober.start()
    this.#nextPushPull = this.#mono() + this.#init.pushPullIntervalMs
    this.#timer = setInterval(() => { this.#housekeeping() }, HOUSEKEEPING_MS)
    this.#timer.unref()
    for (const peer of this.#c.transport.peers()) this.#handler.onConnected(peer, true)
  }

  async stop (): Promise<void> {
    if (!this.#started) return
    this.#started = false
    clearInterval(this.#timer)
    this.#prober.stop()
    this.#stall.stop()
    for (const off of this.#off) off()
    this.#off = []
    // leave: a dead about ourselves, signed by us, to a few members, so they need not wait for a timeout
    try {
      const leave = await this.#table.leaveRecord()
      const targets = shuffle(this.#c.transport.peers().filter(p => this.#table.entries.get(p)?.state === 'alive')).slice(0, this.#init.gossipNodes + 1)
      for (const peer of targets) this.#c.transport.gossip(peer, { t: 'gossip', g: [leave] })
      if (targets.length > 0) await new Promise(resolve => setTimeout(resolve, 100))
    } catch {}
    for (const e of this.#table.entries.values()) e.suspicion?.cancel()
    await this.#c.transport.stop()
  }

  /** The members this node probes and is probed by (its ring neighbours): the connector keeps their connections. */
  neighbours (): ReadonlySet<string> {
    return this.#prober.neighbours
  }

  /** Lifeguard's view of this node: score 0 is healthy. */
  localHealth (): LocalHealthState {
    return this.#health.state()
  }

  /** This node's clock against its peers'. */
  clock (): SelfClock {
    return this.#clock.self
  }

  /** Liveness of one peer right now; members we know nothing of are dead. */
  stateOf (peerId: string): MemberState {
    if (peerId === this.#self) return 'alive'
    if (!this.#admits(peerId)) return 'dead'
    return this.#table.entries.get(peerId)?.state ?? 'dead'
  }

  /**
   * Every member. The list is built again only when something it shows
   * changed (a member joined, left, changed state or incarnation; a clock
   * verdict flipped; a node record arrived), or `MEMBERS_TTL_MS` passed:
   * the election asks for it several times a second. Its member objects are
   * kept while their facts hold (`MemberListing`), so an unchanged fleet
   * lists the same objects. What only the TTL brings: a certificate renewed
   * with other labels before its node record arrives (a revocation or an
   * expiry removes the member at the next sweep, within SWEEP_EVERY s).
   * Last-seen times, clock offsets, addresses and health reports are read
   * when read.
   */
  members (): readonly Member[] {
    const now = this.#mono()
    const version = this.#table.version + this.#clock.version
    const listed = this.#listed
    // the same array until it is rebuilt: at 5000 members a copy per call was most of what the election's checks allocated
    if (listed != null && listed.version === version && now - listed.at < MEMBERS_TTL_MS) return listed.members
    this.#listing.beginRound()
    const out: Member[] = [this.#selfMember()]
    for (const id of this.#table.entries.keys()) {
      const m = this.#peerMember(id)
      if (m != null) out.push(m)
    }
    this.#listing.endRound()
    this.#listed = { at: now, version, members: out }
    return out
  }

  #listed?: { at: number, version: number, members: Member[] }
  #rounds = 0

  /** One member as `members()` would list it, without building the list; undefined when it is not one. */
  member (peerId: string): Member | undefined {
    return peerId === this.#self ? this.#selfMember() : this.#peerMember(peerId)
  }

  #selfMember (): Member {
    const self = this.#clock.self
    return this.#listing.member(this.#self, { state: 'alive', since: this.#aliveSince, incarnation: this.#table.self?.inc ?? null, clockSkewed: self.skewed, claims: this.#c.trust.claimsFor(this.#self) })
  }

  #peerMember (id: string): Member | undefined {
    const e = this.#table.entries.get(id)
    if (e == null) return undefined
    const claims = this.#admitted(id)
    if (claims == null) return undefined
    return this.#listing.member(id, { state: e.state, since: e.since, incarnation: e.record?.inc ?? null, clockSkewed: this.#clock.skewed(id), claims })
  }

  #admits (id: string): boolean {
    return this.#admitted(id) != null
  }

  /** The certificate claims of a member we admit: not denied, with a valid certificate. */
  #admitted (id: string): NodeClaims | undefined {
    return this.#c.trust.isDenied(id) ? undefined : this.#c.trust.claimsFor(id)
  }

  #size (): number {
    return this.#table.entries.size + 1
  }

  #ownAddrs (): string[] {
    return this.#c.addresses().filter(a => a.length <= MAX_ADDR_CHARS).slice(0, MAX_ADDRS)
  }

  /** Signed addresses first; the node record's as a fallback. */
  #addrsOf (id: string): string[] {
    if (id === this.#self) return this.#table.self?.addrs ?? this.#ownAddrs()
    const signed = this.#table.entries.get(id)?.record?.addrs
    if (signed != null && signed.length > 0) return signed
    const record = this.#c.registry.value<Partial<NodeRecord>>(`node/${id}`)
    return Array.isArray(record?.addresses) ? record.addresses.filter((a): a is string => typeof a === 'string').slice(0, MAX_ADDRS) : []
  }

  #onNodeRecord (id: string, record: Partial<NodeRecord> | undefined): void {
    if (id === this.#self || record == null) return
    this.#audit.check(id, record).then(admitted => { if (admitted) this.#learn(id) }).catch(() => {})
  }

  /** A member we may now admit: track it, and probe it soon if we have never heard from it. */
  #learn (id: string): void {
    // its certificate may be new (a renewal's labels): list it afresh
    this.#listed = undefined
    const known = this.#table.entries.has(id)
    const e = this.#table.know(id)
    if (e == null) return
    const stranger = this.#strangers.get(id)
    if (stranger != null) {
      this.#strangers.delete(id)
      // as it came: a claim learnt in a push-pull is not news to spread
      void this.#table.merge(stranger.record, stranger.via, this.#self).catch(() => {})
    }
    // over a connection we hold, a probe costs no dial; otherwise its alive claim comes by gossip
    // and its ring predecessors probe it
    if (!known && e.record == null && this.#c.transport.connected(id)) this.#prober.soon(id)
  }

  #onState (id: string, state: MemberState, previous: MemberState | undefined, reason: string): void {
    this.#listed = undefined
    if (previous != null) {
      this.#c.logger[state === 'dead' ? 'warn' : 'info']({ peer: id, state, previous, reason }, `member ${state}`)
    }
    if (state === 'dead') {
      this.#clock.forget(id)
      // its connections are probably half-open; if it lives, it is redialled and refutes
      if (previous != null && this.#started) this.#c.transport.hangUp(id)
    }
    this.safeDispatchEvent('member:state', { detail: { peerId: id, state, previous } })
  }

  #reject (err: Error & { code?: string }, from: string | undefined): void {
    this.#c.metrics?.rejected(err.code ?? 'ERR_SWIM')
    this.#c.logger.debug({ peer: from, code: err.code, err: err.message }, 'membership message refused')
  }

  #onStall (lateMs: number): void {
    // enough to hold verdicts back until refutations of what timed out
    // meanwhile arrive, not one point per missed period: recovery takes one
    // answered probe per point at stretched intervals, and the election (which
    // waits for health) keeps its own deferral after a stall
    const stretch = Math.min(STALL_SCORE_MAX, Math.ceil(lateMs / this.#init.probeIntervalMs))
    this.#c.logger.warn({ lateMs: Math.round(lateMs) }, 'this process did not run for a while (stalled or starved of CPU)')
    this.#health.apply(stretch, `stalled for ${Math.round(lateMs)} ms`)
  }

  async #pushPull (peer: string): Promise<void> {
    this.#pushPulledAt.set(peer, this.#mono())
    const theirs = await this.#c.transport.pushPull(peer, this.#table.records(), PUSH_PULL_TIMEOUT_MS, this.#addrsOf(peer))
    await this.#mergeSync(theirs, peer)
  }

  async #mergeSync (records: MemberRecord[], from: string): Promise<void> {
    let i = 0
    for (const r of records) {
      await this.#table.merge(r, 'sync', from)
      // thousands of signatures to check: let the probes through now and then
      if (++i % 64 === 0) await new Promise(resolve => setImmediate(resolve))
    }
  }

  #housekeeping (): void {
    this.#stall.check()
    // a member dead for long whose node record the registry has collected is gone:
    // forget it (if it comes back, its alive claim admits it again); members whose
    // certificate expired or was revoked go too. Every SWEEP_EVERY rounds: each
    // sweep checks every member's certificate (5000 a second was a few % of an idle agent)
    if (++this.#rounds % SWEEP_EVERY === 0) {
      const wall = Date.now()
      this.#table.sweep(e => wall - e.since > FORGET_DEAD_MS && this.#c.registry.value(`node/${e.id}`) === undefined)
    }
    const counts: Record<MemberState, number> = { alive: 1, suspect: 0, dead: 0 }
    for (const e of this.#table.entries.values()) counts[e.state]++
    this.#c.metrics?.members(counts)

    this.#clock.check(id => this.#table.entries.get(id)?.state === 'alive')

    // a stranger's node record (its certificate) usually follows its alive claim within a
    // second, through the registry: only one still unknown after STRANGER_GRACE_MS is dialled.
    // When 40 agents each dialled every newcomer, a join cost the newcomer 40 handshakes at once
    const [stranger] = this.#strangers.values()
    if (stranger != null && this.#mono() - stranger.at >= STRANGER_GRACE_MS) {
      this.#strangers.delete(stranger.record.id)
      this.#c.transport.introduce(stranger.record.id, stranger.record.addrs)
    }

    const now = this.#mono()
    if (now >= this.#nextPushPull) {
      const n = this.#size()
      // memberlist's pushPullScale: one more interval per doubling past 32 members
      const scale = n <= 32 ? 1 : Math.ceil(Math.log2(n) - Math.log2(32)) + 1
      this.#nextPushPull = now + this.#init.pushPullIntervalMs * scale
      const peer = shuffle(this.#c.transport.peers().filter(p => this.#table.entries.get(p)?.state === 'alive'))[0]
      if (peer != null) this.#pushPull(peer).catch(err => { this.#c.logger.debug({ peer, err: err.message }, 'push-pull failed') })
    }
  }

  readonly #handler: TransportHandler = {
    onRequest: async (from, frame, signal) => await this.#prober.handleRequest(from, frame, signal),
    onGossip: (from, frame) => { this.#prober.handleGossip(from, frame) },
    records: () => this.#table.records(),
    onPushPull: (from, theirs) => {
      this.#mergeSync(theirs, from).catch(err => { this.#c.logger.debug({ peer: from, err: err.message }, 'merging push-pull failed') })
    },
    onConnected: (peer) => {
      if (!this.#started) return
      this.#learn(peer)
      const e = this.#table.entries.get(peer)
      if (e == null) return
      // it is new to us, or we hold it suspect or dead, or we know almost nobody:
      // swap everything, so whichever side is wrong about the other refutes
      const confirmed = [...this.#table.entries.values()].filter(x => x.record != null).length
      const stale = e.state !== 'alive' || e.record == null || confirmed < 2
      const last = this.#pushPulledAt.get(peer) ?? -Infinity
      if (stale && this.#mono() - last >= PUSH_PULL_RETRY_MS) {
        this.#pushPull(peer).catch(err => { this.#c.logger.debug({ peer, err: err.message }, 'push-pull failed') })
      }
      if (e.state === 'dead') this.#prober.soon(peer)
    },
    onDisconnected: peer => { this.#prober.hint(peer) },
    onInvalid: (from, err) => { this.#reject(err, from) }
  }
}

/**
 * How long `members()` may answer from the list it last built while
 * nothing it shows changed (the table's and the clock verdicts' versions
 * say when something did): what only time changes, a certificate that
 * expired or was renewed, is seen within this. Rebuilt every second, the
 * list was a tenth of an idle agent's main thread at N = 5000.
 */
const MEMBERS_TTL_MS = 5000
