import { MAX_INCARNATION, type Accusation, type MemberRecord } from '../../protocols/swim/wire.ts'
import { BadMemberRecordError, type MembershipError } from './errors.ts'
import { signAccusation, signAlive, type RecordVerifier } from './records.ts'
import { Suspicion } from './suspicion.ts'
import type { LocalHealth, StallWatch } from './awareness.ts'
import type { BroadcastQueue } from './broadcasts.ts'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'

export type MemberState = 'alive' | 'suspect' | 'dead'

/** What this node holds about one other member. */
export interface TableEntry {
  id: string
  /** the member's own signed alive claim (no accusation); absent until we have one */
  record?: MemberRecord
  /** the accusation in force at `record.inc` */
  acc?: Accusation
  state: MemberState
  /** wall-clock ms of the last state change */
  since: number
  /** monotonic ms of the last frame or ack from it */
  lastHeard?: number
  /** failed probes while we never had its alive claim */
  failures: number
  suspicion?: Suspicion
}

export interface TableContext {
  self: string
  privateKey: PrivateKey
  verifier: RecordVerifier
  /** the member holds a valid, unrevoked fleet certificate */
  admits(id: string): boolean
  health: LocalHealth
  stall: StallWatch
  queue: BroadcastQueue
  /** current suspicion timer bounds and expected confirmations */
  suspicion(): { minMs: number, maxMs: number, k: number }
  /** how long to wait before deciding again while unhealthy */
  postponeMs(): number
  onState(id: string, state: MemberState, previous: MemberState | undefined, reason: string): void
  /** a record a peer sent was refused */
  onReject(err: MembershipError, from: string | undefined): void
  /** a signed record about someone whose certificate we do not know yet */
  onStranger(record: MemberRecord, via: Via): void
  /** our incarnation changed (persist it) */
  onIncarnation?(inc: number): void
  logger: Logger
  monotonic: () => number
}

/** Where a record came from: push-pull treats `dead` as suspicion (memberlist's mergeState). */
export type Via = 'gossip' | 'sync' | 'ack'

/** Largest membership this node tracks; past it, new members are ignored. */
export const MAX_MEMBERS = 10_000

/**
 * The member table and SWIM's rules for changing it. Every claim is a
 * signed record; a higher incarnation of a member's own alive claim
 * overrides any accusation at a lower one, and at equal incarnations
 * dead > suspect > alive. All changes run one at a time.
 */
export class MemberTable {
  readonly entries = new Map<string, TableEntry>()
  /** Goes up with every change a member list shows (members, states, incarnations, ours): lists built before are stale. */
  version = 0
  readonly #c: TableContext
  #self!: MemberRecord
  #addrs: string[] = []
  #serial: Promise<unknown> = Promise.resolve()

  constructor (context: TableContext) {
    this.#c = context
  }

  /** Sign our first alive claim, at an incarnation past any of a previous run. */
  async init (addrs: string[], inc: number): Promise<void> {
    this.#addrs = addrs
    this.#self = await signAlive(this.#c.privateKey, this.#c.self, Math.min(MAX_INCARNATION - 1, inc), addrs)
    this.version++
    this.#c.onIncarnation?.(this.#self.inc)
  }

  get self (): MemberRecord {
    return this.#self
  }

  /** Every record we hold, ours first, for push-pull. */
  records (): MemberRecord[] {
    const out: MemberRecord[] = [this.#self]
    for (const e of this.entries.values()) {
      const r = recordOf(e)
      if (r != null) out.push(r)
    }
    return out
  }

  /** Run `fn` after every change queued before it. */
  async run<T> (fn: () => Promise<T> | T): Promise<T> {
    const next = this.#serial.then(fn, fn)
    this.#serial = next.catch(() => {})
    return await next
  }

  /** A member we know of from elsewhere (registry, a connection) but have no claim from yet. */
  know (id: string): TableEntry | undefined {
    if (id === this.#c.self) return undefined
    let e = this.entries.get(id)
    if (e == null) {
      if (this.entries.size >= MAX_MEMBERS || !this.#c.admits(id)) return undefined
      e = { id, state: 'suspect', since: Date.now(), failures: 0 }
      this.entries.set(id, e)
      this.version++
      this.#c.onState(id, 'suspect', undefined, 'known, not heard from yet')
    }
    return e
  }

  heard (id: string): void {
    const e = this.entries.get(id)
    if (e != null) e.lastHeard = this.#c.monotonic()
  }

  /**
   * Drop members whose certificate is no longer valid (expired, revoked),
   * and dead ones `forget` says are gone for good.
   */
  sweep (forget: (e: TableEntry) => boolean = () => false): void {
    for (const e of this.entries.values()) {
      const admitted = this.#c.admits(e.id)
      if (admitted && !(e.state === 'dead' && forget(e))) continue
      e.suspicion?.cancel()
      this.entries.delete(e.id)
      this.version++
      this.#c.queue.drop(e.id)
      if (e.state !== 'dead') this.#c.onState(e.id, 'dead', e.state, 'certificate no longer valid')
    }
  }

  async merge (r: MemberRecord, via: Via, sender: string): Promise<void> {
    await this.run(async () => { await this.#merge(r, via, sender) })
  }

  /** Our probe of `id` failed, direct and indirect: accuse it (or, never confirmed, count it). */
  async accuse (id: string): Promise<void> {
    await this.run(async () => {
      const e = this.entries.get(id)
      if (e == null || e.state === 'dead') return
      if (e.record == null) {
        // a name from the registry that never answered: ours alone to judge, nothing to spread
        e.failures++
        if (e.failures >= 2) this.#setState(e, 'dead', 'never answered a probe')
        return
      }
      this.#suspect(e, await signAccusation(this.#c.privateKey, 's', id, e.record.inc, this.#c.self))
    })
  }

  /** Refute an accusation of us at `inc` (or a claim of ours from a previous run) by going one higher. */
  async refute (inc: number, reason: string): Promise<void> {
    const next = Math.min(MAX_INCARNATION, Math.max(this.#self.inc, inc) + 1)
    this.#self = await signAlive(this.#c.privateKey, this.#c.self, next, this.#addrs)
    this.version++
    this.#c.queue.push(this.#self)
    this.#c.onIncarnation?.(next)
    this.#c.logger.info({ inc: next, reason }, 'refuting: announcing a higher incarnation')
  }

  /** Leaving: a `dead` about ourselves, signed by us, that nobody will contest. */
  async leaveRecord (): Promise<MemberRecord> {
    return { ...this.#self, acc: await signAccusation(this.#c.privateKey, 'd', this.#c.self, this.#self.inc, this.#c.self) }
  }

  async #merge (r: MemberRecord, via: Via, sender: string): Promise<void> {
    if (r.id === this.#c.self) {
      await this.#mergeSelf(r)
      return
    }
    if (!this.#c.admits(r.id)) {
      if (!this.#c.admits(sender)) return
      if (await this.#c.verifier.alive(r)) this.#c.onStranger(r, via)
      return
    }
    const e = this.know(r.id)
    if (e == null) return
    const current = e.record?.inc ?? -1
    if (r.inc < current) return
    if (r.inc > current) {
      if (!await this.#c.verifier.alive(r)) {
        this.#c.onReject(new BadMemberRecordError(`alive claim of ${r.id} at ${r.inc} is not signed by it`), sender)
        return
      }
      e.record = { id: r.id, inc: r.inc, addrs: r.addrs, sig: r.sig }
      this.version++
      e.acc = undefined
      e.failures = 0
      e.suspicion?.cancel()
      e.suspicion = undefined
      this.#setState(e, 'alive', current < 0 ? 'first alive claim' : `incarnation ${r.inc}`)
      // News is spread; a member we simply had not heard of, learnt in a push-pull, is not: the
      // sender held it already, and the member announced itself when it joined. (A joining node
      // learns the whole fleet this way: queueing it all would gossip N records ~4·log10 N times.)
      if (current >= 0 || via !== 'sync') this.#c.queue.push(recordOf(e)!)
    }
    const acc = r.acc
    if (acc == null || e.acc?.k === 'd') return
    // only its own `dead` (leaving) may come from the member itself
    if (acc.from === r.id ? acc.k !== 'd' : !this.#c.admits(acc.from)) return
    if (!await this.#c.verifier.accusation(r, acc)) {
      this.#c.onReject(new BadMemberRecordError(`accusation of ${r.id} is not signed by ${acc.from}`), sender)
      return
    }
    if (acc.k === 'd' && via === 'sync' && acc.from !== r.id) {
      // another side of a partition may hold it dead while it is well here:
      // suspect it ourselves and let it refute (memberlist's mergeState)
      if (e.record == null) return
      this.#suspect(e, await signAccusation(this.#c.privateKey, 's', r.id, e.record.inc, this.#c.self))
      e.suspicion?.confirm(acc.from)
      return
    }
    if (acc.k === 'd') this.#dead(e, acc)
    else this.#suspect(e, acc)
  }

  async #mergeSelf (r: MemberRecord): Promise<void> {
    if (r.inc > this.#self.inc) {
      // only a previous run of ours could have signed this
      if (await this.#c.verifier.alive(r)) await this.refute(r.inc, 'a claim of ours from an earlier run')
      return
    }
    if (r.inc !== this.#self.inc || r.acc == null || r.acc.from === this.#c.self) return
    if (!this.#c.admits(r.acc.from) || !await this.#c.verifier.accusation(r, r.acc)) return
    // being accused is a hint that we are the slow one (Lifeguard)
    this.#c.health.apply(1, 'refuted an accusation')
    await this.refute(r.inc, `${r.acc.k === 'd' ? 'declared dead' : 'suspected'} by ${r.acc.from}`)
  }

  #suspect (e: TableEntry, acc: Accusation): void {
    if (e.suspicion != null) {
      // a new independent accuser shortens the timer and is news worth passing on
      if (e.suspicion.confirm(acc.from)) this.#c.queue.push({ ...e.record!, acc })
      return
    }
    if (e.state !== 'alive' || e.record == null) return
    const inc = e.record.inc
    const { minMs, maxMs, k } = this.#c.suspicion()
    e.acc = acc
    e.suspicion = new Suspicion(acc.from, k, minMs, maxMs, n => { void this.run(async () => { await this.#expire(e.id, inc, n) }) }, this.#c.monotonic)
    this.#setState(e, 'suspect', `accused by ${acc.from}`)
    this.#c.queue.push(recordOf(e)!)
  }

  async #expire (id: string, inc: number, confirmations: number): Promise<void> {
    const e = this.entries.get(id)
    if (e == null || e.state !== 'suspect' || e.record?.inc !== inc || e.suspicion == null) return
    // a node that stalled or doubts itself does not declare others dead (Lifeguard)
    if (!this.#c.health.healthy || this.#c.stall.stalledSince(this.#c.monotonic() - this.#c.postponeMs())) {
      this.#c.logger.debug({ peer: id, score: this.#c.health.score }, 'suspicion timed out while unhealthy; deciding later')
      e.suspicion.postpone(this.#c.postponeMs())
      return
    }
    this.#c.logger.info({ peer: id, confirmations }, 'suspicion timed out')
    this.#dead(e, await signAccusation(this.#c.privateKey, 'd', id, inc, this.#c.self))
  }

  #dead (e: TableEntry, acc: Accusation): void {
    if (e.state === 'dead' && e.acc?.k === 'd') return
    e.suspicion?.cancel()
    e.suspicion = undefined
    e.acc = acc
    this.#setState(e, 'dead', acc.from === e.id ? 'left' : `declared dead by ${acc.from}`)
    this.#c.queue.push(recordOf(e)!)
  }

  #setState (e: TableEntry, state: MemberState, reason: string): void {
    const previous = e.state
    if (previous === state) return
    this.version++
    e.state = state
    e.since = Date.now()
    this.#c.onState(e.id, state, previous, reason)
  }
}

/** What we would tell others about `e`: its alive claim and any accusation. */
export function recordOf (e: TableEntry): MemberRecord | undefined {
  if (e.record == null) return undefined
  return e.acc == null ? e.record : { ...e.record, acc: e.acc }
}
