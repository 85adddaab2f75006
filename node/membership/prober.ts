import { MAX_SEQ, type Ack, type Gossip, type MemberRecord, type Reply, type Request } from '../../protocols/swim/wire.ts'
import { ForgedAckError, type MembershipError } from './errors.ts'
import { signRelayedAck, type RecordVerifier } from './records.ts'
import { ProbeRing } from './ring.ts'
import { recordOf, type MemberTable } from './table.ts'
import type { LocalHealth, StallWatch } from './awareness.ts'
import type { BroadcastQueue } from './broadcasts.ts'
import type { ClockOffsets } from './clock.ts'
import type { SwimTransport } from './transport.ts'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'

export type ProbeResult = 'ok' | 'indirect' | 'failed' | 'inconclusive'

/** Records piggybacked on one frame, and the bytes they may take. */
const PIGGYBACK_ITEMS = 8
const PIGGYBACK_BYTES = 6 * 1024
/** Indirect probes this node runs for others at once. */
const MAX_RELAYING = 8
/**
 * On a ring, one probe in this many goes to a member anywhere in the fleet
 * (a shuffled round over all): it samples every member's clock now and
 * then, and checks members that views of the ring disagreeing for a while
 * would leave unprobed, at one new connection per this many intervals.
 */
const SURVEY_EVERY = 8
/** Re-probe a member held suspect or dead on outside news at most this often. */
const RECHECK_MS = 5000

export interface ProberTiming {
  probeIntervalMs: number
  probeTimeoutMs: number
  indirectChecks: number
  /** Probe only this many ring successors (ring.ts); 0: every member, in a shuffled round robin (SWIM's order). */
  probeSuccessors: number
  gossipIntervalMs: number
  gossipNodes: number
}

export interface ProberContext {
  self: string
  privateKey: PrivateKey
  table: MemberTable
  transport: SwimTransport
  health: LocalHealth
  stall: StallWatch
  queue: BroadcastQueue
  verifier: RecordVerifier
  clock: ClockOffsets
  /** where to dial a member */
  addrsOf(id: string): string[]
  logger: Logger
  monotonic: () => number
  onProbe?(result: ProbeResult): void
  /** a relay sent an ack the target did not sign */
  onReject?(err: MembershipError, from: string): void
}

/**
 * SWIM's failure detector: every (stretched) probe interval, probe the next
 * of this node's ring successors (or, with `probeSuccessors` 0, of a
 * shuffled round-robin list of all members) directly; if no ack comes within
 * the probe timeout, ask `indirectChecks` others to probe it and answer ack
 * or nack; with no ack at all, accuse it. Acks carry the responder's clock;
 * every frame carries changes that are still news. Answers the same
 * requests from others.
 */
export class Prober {
  readonly #c: ProberContext
  readonly #t: ProberTiming
  readonly #round = new RoundRobin()
  /** on a ring, every SURVEY_EVERY-th probe goes to the next member of a shuffled round over all of them */
  readonly #survey = new RoundRobin()
  #sinceSurvey = 0
  readonly #ring = new ProbeRing()
  /** on a ring: the members we probe and the ones that probe us, as of the last round */
  #neighbours = new Set<string>()
  /** The ring as last computed, and the table version it was computed at: it changes only with the members. */
  #ringAt?: { version: number, successors: string[] }
  readonly #urgent = new Set<string>()
  readonly #probing = new Set<string>()
  readonly #rechecked = new Map<string, number>()
  #relaying = 0
  #lastHint = -Infinity
  #probeTimer?: NodeJS.Timeout
  #gossipTimer?: NodeJS.Timeout
  #running = false

  constructor (context: ProberContext, timing: ProberTiming) {
    this.#c = context
    this.#t = timing
  }

  start (): void {
    this.#running = true
    // a random phase, so members started together do not probe in step
    this.#probeTimer = setTimeout(() => { void this.#tick() }, Math.random() * this.#t.probeIntervalMs)
    this.#gossipTimer = setInterval(() => { this.gossipRound() }, this.#t.gossipIntervalMs)
    this.#gossipTimer.unref()
  }

  stop (): void {
    this.#running = false
    clearTimeout(this.#probeTimer)
    clearInterval(this.#gossipTimer)
  }

  /** On a ring: the members this node probes and the ones that probe it, as of the last round (their connections are kept). */
  get neighbours (): ReadonlySet<string> {
    return this.#neighbours
  }

  /**
   * Probe `id` before the round-robin order would: a new or unconfirmed
   * member, or one held dead that we are connected to again (its ack
   * carries its newer claim, if it refuted).
   */
  soon (id: string): void {
    if (id !== this.#c.self) this.#urgent.add(id)
  }

  /**
   * Our connection to `id` closed: probe it now rather than when its turn
   * comes. A killed process closes its connections at once, so this is
   * what makes detection of a crash fast; at most one such probe per probe
   * interval, so connection churn cannot turn into a probe storm. On a
   * ring, only for our ring neighbours (the members we probe and the ones
   * that probe us, 2·k accusers of a crash): a connection to anyone else
   * closes when a peer prunes it, and probing it would dial it again.
   */
  hint (id: string): void {
    const now = this.#c.monotonic()
    const e = this.#c.table.entries.get(id)
    if (!this.#running || e == null || e.state !== 'alive' || this.#probing.has(id)) return
    if (this.#t.probeSuccessors > 0 && !this.#neighbours.has(id)) return
    if (now - this.#lastHint < this.#t.probeIntervalMs) return
    this.#lastHint = now
    void this.probe(id).catch(err => { this.#c.logger.debug({ peer: id, err: err.message }, 'probe failed') })
  }

  /**
   * Something we heard elsewhere (a fresh registry write) says `id`, which we
   * hold suspect or dead, may be back: probe it now, at most once per
   * `RECHECK_MS` per member. Its ack carries its refutation if it made one.
   */
  recheck (id: string): void {
    const e = this.#c.table.entries.get(id)
    if (!this.#running || e == null || e.state === 'alive' || this.#probing.has(id)) return
    const now = this.#c.monotonic()
    if (now - (this.#rechecked.get(id) ?? -Infinity) < RECHECK_MS) return
    this.#rechecked.set(id, now)
    if (this.#rechecked.size > 10_000) this.#rechecked.clear()
    void this.probe(id).catch(err => { this.#c.logger.debug({ peer: id, err: err.message }, 'probe failed') })
  }

  async #tick (): Promise<void> {
    if (!this.#running) return
    const started = this.#c.monotonic()
    this.#c.stall.check()
    const target = this.#next()
    if (target != null) {
      await this.probe(target).catch(err => { this.#c.logger.debug({ peer: target, err: err.message }, 'probe failed') })
    }
    if (!this.#running) return
    const interval = this.#c.health.scale(this.#t.probeIntervalMs)
    const wait = Math.max(0, interval - (this.#c.monotonic() - started))
    this.#probeTimer = setTimeout(() => { void this.#tick() }, wait)
  }

  #next (): string | undefined {
    for (const id of this.#urgent) {
      this.#urgent.delete(id)
      const e = this.#c.table.entries.get(id)
      // a newcomer whose alive claim reached us meanwhile (a joining node learns the whole fleet's
      // by push-pull) needs no probe out of turn: its ring predecessors probe it
      if (e != null && (e.record == null || e.state !== 'alive')) return id
    }
    const k = this.#t.probeSuccessors
    if (k > 0 && ++this.#sinceSurvey >= SURVEY_EVERY) {
      this.#sinceSurvey = 0
      // members whose clock we have never sampled first
      const id = this.#survey.next(() => shuffle(this.#candidates()).sort((a, b) => Number(this.#c.clock.of(a) != null) - Number(this.#c.clock.of(b) != null)), this.#probeable)
      if (id != null) return id
    }
    return this.#round.next(() => {
      // a fresh round over the members not known dead: our ring successors among them, or all of them shuffled
      if (k === 0) return shuffle(this.#candidates())
      // sorting the fleet's ring every k probes was a few % of an idle agent's main thread at N = 5000
      const version = this.#c.table.version
      if (this.#ringAt == null || this.#ringAt.version !== version) {
        const { successors, predecessors } = this.#ring.around(this.#c.self, this.#candidates(), k)
        this.#neighbours = new Set([...successors, ...predecessors])
        this.#ringAt = { version, successors }
      }
      return shuffle([...this.#ringAt.successors])
    }, this.#probeable)
  }

  #candidates (): string[] {
    return [...this.#c.table.entries.values()].filter(e => e.state !== 'dead' && e.id !== this.#c.self).map(e => e.id)
  }

  readonly #probeable = (id: string): boolean => {
    const e = this.#c.table.entries.get(id)
    return e != null && e.state !== 'dead'
  }

  /** One full probe of `id`: direct, then indirect, then an accusation. */
  async probe (id: string): Promise<ProbeResult> {
    this.#probing.add(id)
    try {
      const result = await this.#probe(id)
      this.#c.onProbe?.(result)
      return result
    } finally {
      this.#probing.delete(id)
    }
  }

  async #probe (id: string): Promise<ProbeResult> {
    const { table, transport, health, stall } = this.#c
    const e = table.entries.get(id)
    if (e == null) return 'inconclusive'
    // a member we hold no connection to (a survey, a newcomer): the dial, the
    // handshake and the certificate exchange are no measure of its liveness,
    // and on a busy machine they alone outlast the probe timeout, so every
    // such probe went on to relays (who dialled too) and to an accusation the
    // member then had to refute. Connect first; a dial that fails is the
    // direct probe failing.
    let reachable = true
    if (!transport.connected(id)) reachable = await transport.link(id, this.#c.addrsOf(id)).then(() => true, () => false)
    if (!this.#running) return 'inconclusive'
    const start = this.#c.monotonic()
    const timeout = Math.round(health.scale(this.#t.probeTimeoutMs))
    const deadline = start + health.scale(this.#t.probeIntervalMs)
    const sentWall = Date.now()
    if (reachable) {
      try {
        const reply = await transport.request(id, { t: 'ping', g: this.#piggyback(id), ...(e.record == null ? {} : { inc: e.record.inc }) }, timeout, this.#c.addrsOf(id))
        if (reply.t === 'ack') {
          this.#onAck(id, reply, sentWall, start)
          health.apply(-1, 'probe answered')
          return 'ok'
        }
      } catch {}
    }
    if (stall.stalledSince(start)) return 'inconclusive'
    // checking on one held dead: no answer changes nothing, and is nobody's fault
    if (e.state === 'dead') return 'failed'

    const relays = this.#relays(id)
    const nonce = Math.floor(Math.random() * MAX_SEQ)
    const wait = Math.round(Math.max(timeout, deadline - this.#c.monotonic()))
    // relays give up (and nack) at 80% of our wait, so their nacks reach us in time (Lifeguard)
    const relayMs = Math.max(10, Math.min(10_000, Math.floor(0.8 * wait)))
    const answers = await Promise.allSettled(relays.map(async r => await transport.request(r,
      { t: 'req', id, n: nonce, ms: relayMs, g: this.#piggyback(r) }, wait, this.#c.addrsOf(r))))
    // relays that answered in time at all (a nack, an ack, even a forged one):
    // what Lifeguard counts is whether we keep up with them, not what they say
    let answered = 0
    for (const [i, a] of answers.entries()) {
      if (a.status !== 'fulfilled') continue
      table.heard(relays[i]!)
      answered++
      if (a.value.t === 'nack') continue
      this.#mergeAll(a.value.g, relays[i]!)
      if (a.value.sig != null && await this.#c.verifier.relayedAck(this.#c.self, nonce, id, a.value.sig)) {
        table.heard(id)
        health.apply(-1, 'probe answered through a relay')
        return 'indirect'
      }
      this.#c.onReject?.(new ForgedAckError(`an ack for ${id} relayed by ${relays[i]!} is not signed by ${id}`), relays[i]!)
    }
    if (stall.stalledSince(start)) return 'inconclusive'
    // Lifeguard: relays that did not even nack suggest we are the one not keeping up
    health.apply(relays.length === 0 ? 1 : relays.length - answered, 'probe failed without nacks')
    await table.accuse(id)
    return 'failed'
  }

  /** Up to `indirectChecks` members we believe alive, other than us and the target. */
  #relays (target: string): string[] {
    const alive = [...this.#c.table.entries.values()].filter(e => e.id !== target && e.state === 'alive' && e.record != null).map(e => e.id)
    // prefer members we are connected to: asking them costs no dial
    const connected = shuffle(alive.filter(id => this.#c.transport.connected(id)))
    const rest = shuffle(alive.filter(id => !this.#c.transport.connected(id)))
    return [...connected, ...rest].slice(0, this.#t.indirectChecks)
  }

  #onAck (id: string, ack: Ack, sentWall: number, start: number): void {
    const rtt = this.#c.monotonic() - start
    this.#c.table.heard(id)
    this.#c.clock.sample(id, sentWall, Date.now(), ack.now, rtt)
    this.#mergeAll(ack.g, id)
  }

  /** Answer a peer's ping or indirect-probe request. */
  async handleRequest (from: string, frame: Request, signal: AbortSignal): Promise<Reply | undefined> {
    const { table } = this.#c
    table.heard(from)
    // news about us first: if the prober holds us suspect or dead, we refute before
    // answering, so the ack itself carries the refutation (one round trip back to alive)
    const aboutUs = frame.g?.filter(r => r.id === this.#c.self) ?? []
    for (const r of aboutUs) await table.merge(r, 'gossip', from).catch(() => {})
    this.#mergeAll(frame.g?.filter(r => r.id !== this.#c.self), from)
    if (frame.t === 'ping') {
      const g = this.#piggyback(from)
      // the prober is behind on us: it gets our own claim
      if (frame.inc == null || frame.inc < table.self.inc) g.unshift(table.self)
      const ack: Ack = { t: 'ack', re: frame.seq, now: Date.now(), ...(g.length > 0 ? { g } : {}) }
      if (frame.for != null) ack.sig = await signRelayedAck(this.#c.privateKey, frame.for.id, frame.for.n, this.#c.self)
      return ack
    }
    const nack: Reply = { t: 'nack', re: frame.seq }
    const target = table.entries.get(frame.id)
    if (frame.id === this.#c.self || target == null || this.#relaying >= MAX_RELAYING || signal.aborted) return nack
    this.#relaying++
    try {
      const reply = await this.#c.transport.request(frame.id,
        { t: 'ping', for: { id: from, n: frame.n }, g: this.#piggyback(frame.id), ...(target.record == null ? {} : { inc: target.record.inc }) },
        frame.ms, this.#c.addrsOf(frame.id))
      if (reply.t !== 'ack' || reply.sig == null) return nack
      table.heard(frame.id)
      this.#mergeAll(reply.g, frame.id)
      const g = this.#piggyback(from)
      return { t: 'ack', re: frame.seq, now: reply.now, sig: reply.sig, ...(g.length > 0 ? { g } : {}) }
    } catch {
      return nack
    } finally {
      this.#relaying--
    }
  }

  handleGossip (from: string, frame: Gossip): void {
    this.#c.table.heard(from)
    this.#mergeAll(frame.g, from)
  }

  /** Send queued changes to a few connected members (only when there are any). */
  gossipRound (): void {
    if (this.#c.queue.size === 0) return
    // connected members whatever we think of them: a working connection to a
    // member held dead (memberlist's "gossip to the dead") is how it hears it must refute
    const targets = shuffle([...this.#c.table.entries.values()]
      .filter(e => this.#c.transport.connected(e.id))
      .map(e => e.id)).slice(0, this.#t.gossipNodes)
    for (const peer of targets) {
      const g = this.#piggyback(peer)
      if (g.length === 0) break
      this.#c.transport.gossip(peer, { t: 'gossip', g: g as [MemberRecord, ...MemberRecord[]] })
    }
  }

  /**
   * Changes still worth sending to `peer`, plus (Lifeguard's buddy system)
   * what we hold against `peer` itself when it is suspect or dead, so it
   * can refute at once.
   */
  #piggyback (peer: string): MemberRecord[] {
    const out = this.#c.queue.take(PIGGYBACK_ITEMS, PIGGYBACK_BYTES, peer)
    const e = this.#c.table.entries.get(peer)
    if (e != null && e.acc != null) {
      const r = recordOf(e)
      if (r != null) out.unshift(r)
    }
    return out
  }

  #mergeAll (records: MemberRecord[] | undefined, from: string): void {
    for (const r of records ?? []) {
      this.#c.table.merge(r, 'gossip', from).catch(err => { this.#c.logger.debug({ peer: from, err: err.message }, 'merging a member record failed') })
    }
  }
}

/** A list visited in turn, refilled when it runs out; skips what is no longer wanted. */
class RoundRobin {
  #order: string[] = []
  #index = 0

  next (refill: () => string[], wanted: (id: string) => boolean): string | undefined {
    for (let checked = 0; checked <= this.#order.length; checked++) {
      if (this.#index >= this.#order.length) {
        this.#order = refill()
        this.#index = 0
        if (this.#order.length === 0) return undefined
      }
      const id = this.#order[this.#index++]!
      if (wanted(id)) return id
    }
    return undefined
  }
}

export function shuffle<T> (list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[list[i], list[j]] = [list[j]!, list[i]!]
  }
  return list
}
