import { TopicValidatorResult } from '@libp2p/gossipsub'
import { deltaCodec, MAX_DELTA_ENTRIES, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { topicFor, zoneOfTopic, zoneTopic } from '../../protocols/registry/zones.ts'
import { isRelayed } from '../../protocols/registry-relay/index.ts'
import { ClockDriftError, NotRelayedError, QuotaExceededError, UnknownWriterError } from './errors.ts'
import { entryId } from './entry.ts'
import { byTrustFirst } from './order.ts'
import type { EntryVerifier } from './ingress.ts'
import type { WriterQuotas } from './quota.ts'
import type { Refusals } from './refusals.ts'
import type { Replica } from './replica.ts'
import type { ZoneScope } from './zone-scope.ts'
import type { RegistryComponents } from './registry.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Message } from '@libp2p/gossipsub'
import type { PeerId } from '@libp2p/interface'
import type { Logger } from 'pino'

/** Entry ids remembered as charged to their writers' gossip rate. */
const REMEMBERED_CHARGES = 8192

/**
 * Longest a relayed entry waits for this node's next write to its zone
 * (a scheduler renews its lease every second) before it goes alone.
 */
export const RELAY_MAX_DELAY_MS = 1500

/** Where a local write of a relayed key (`health/`) goes instead of gossip; resolves true when it went. */
export type RelayRoute = (entry: WireEntry) => Promise<boolean>

export interface RegistryGossipInit {
  pubsub: RegistryComponents['pubsub']
  trust: RegistryComponents['trust']
  metrics?: RegistryComponents['metrics']
  replica: Replica
  verifier: EntryVerifier
  quotas: WriterQuotas
  refusals: Refusals
  scope: ZoneScope
  /** Install entries that passed validation. */
  apply(entries: WireEntry[]): void
  logger: Logger
}

/**
 * Registry deltas over gossipsub: local writes are batched into deltas and
 * published; arriving deltas go through the validator (certified,
 * unrevoked writers' own signed entries, within their gossip rate, on the
 * right topic) before gossipsub forwards them or the replica sees them.
 *
 * Fleet-wide entries travel on the fleet topic, which every node follows;
 * zone-local ones (`health/`, `instance/`) on their writer's zone topic,
 * which only that zone's nodes and the coordinators follow (`ZoneScope`).
 */
export class RegistryGossip {
  readonly #c: RegistryGossipInit
  readonly #validated = new WeakMap<Uint8Array, WireEntry[]>()
  /** Ids of entries whose writer was charged for them lately (oldest first). */
  readonly #charged = new Set<string>()
  /** Topics this node follows: the fleet topic and its zones'. */
  readonly #topics = new Set<string>()
  #pending: WireEntry[] = []
  #flushScheduled = false
  #started = false
  /** Members' entries this node relays (as their zone's scheduler), newest per key: they go with its next zone write. */
  readonly #relayed = new Map<string, WireEntry>()
  #relayTimer?: NodeJS.Timeout
  #route?: RelayRoute

  constructor (init: RegistryGossipInit) {
    this.#c = init
  }

  start (): void {
    this.#c.pubsub.addEventListener('message', this.#onMessage)
    this.#started = true
    this.#subscribe(REGISTRY_TOPIC)
    this.#subscribe(zoneTopic(this.#c.scope.zone))
  }

  stop (): void {
    this.#started = false
    clearTimeout(this.#relayTimer)
    this.#relayTimer = undefined
    this.#relayed.clear()
    for (const topic of this.#topics) this.#unsubscribe(topic)
    this.#c.pubsub.removeEventListener('message', this.#onMessage)
  }

  /** Zones whose topics this node follows. */
  get zones (): string[] {
    return [...this.#topics].flatMap(t => zoneOfTopic(t) ?? [])
  }

  /** Follow a zone's topic too (a coordinator follows every zone it learns of). */
  follow (zone: string): void {
    if (this.#started && this.#c.scope.follows(zone)) this.#subscribe(zoneTopic(zone))
  }

  /**
   * Keep to the zones this node follows: its own (a certificate renewal
   * may have moved it) or, for a coordinator, every one it knows.
   */
  refollow (): void {
    if (!this.#started) return
    this.#subscribe(zoneTopic(this.#c.scope.zone))
    for (const zone of this.zones) if (!this.#c.scope.follows(zone)) this.#unsubscribe(zoneTopic(zone))
  }

  #subscribe (topic: string): void {
    if (this.#topics.has(topic)) return
    this.#topics.add(topic)
    this.#c.pubsub.topicValidators.set(topic, this.#validate)
    this.#c.pubsub.subscribe(topic)
  }

  #unsubscribe (topic: string): void {
    this.#c.pubsub.unsubscribe(topic)
    this.#c.pubsub.topicValidators.delete(topic)
    this.#topics.delete(topic)
  }

  /** Send local writes of relayed keys this way first (to the zone's scheduler); unset: gossip them. */
  route (route: RelayRoute | undefined): void {
    this.#route = route
  }

  /**
   * Queue a local write; queued writes go out together, per topic, up to
   * MAX_DELTA_ENTRIES per delta. A relayed key (health) goes to the route
   * first, and is gossiped here only when the route did not take it.
   */
  publish (entry: WireEntry): void {
    const route = this.#route
    if (route != null && isRelayed(entry.k)) {
      route(entry).then(sent => { if (!sent) this.#enqueue(entry) }, () => { this.#enqueue(entry) })
      return
    }
    this.#enqueue(entry)
  }

  /**
   * As its zone's scheduler: check entries a member handed us as gossip
   * would (one writer, the sender; relayed keys only; the sender in our
   * zone; the writer's rate, certificate and signatures) and queue them to
   * go with our next write to the zone. Returns the entries new to us (the
   * caller installs them); throws a coded error to refuse.
   */
  async relay (entries: WireEntry[], from: string): Promise<WireEntry[]> {
    const { scope, trust } = this.#c
    for (const e of entries) {
      if (e.w !== from) throw new NotRelayedError(`${e.k}: a member relays only its own entries, not ${e.w}'s`)
      if (!isRelayed(e.k)) throw new NotRelayedError(`${e.k}: only health is relayed`)
    }
    if (trust.isDenied(from)) throw new NotRelayedError(`${from} is denied`)
    if (scope.writerZone(from) !== scope.zone) throw new NotRelayedError(`${from} is not in zone ${scope.zone}`)
    const fresh = entries.filter(e => this.#c.replica.wouldWin(e))
    if (fresh.length === 0) return []
    // the sender is the only writer, and owns what it asks us to relay: any failure refuses it all
    const { verdict, err, passed } = await this.#check(fresh, from)
    if (verdict !== TopicValidatorResult.Accept || passed.length !== fresh.length) throw err ?? new NotRelayedError('refused')
    for (const e of fresh) this.#relayed.set(e.k, e)
    this.#relayTimer ??= setTimeout(() => {
      this.#relayTimer = undefined
      if (this.#relayed.size > 0) this.#enqueue()
    }, RELAY_MAX_DELAY_MS)
    return fresh
  }

  /** Relayed entries still waiting, taken for a delta on `topic` (those whose writer's zone it is). */
  #takeRelayed (topic: string): WireEntry[] {
    clearTimeout(this.#relayTimer)
    this.#relayTimer = undefined
    const out: WireEntry[] = []
    for (const e of this.#relayed.values()) {
      try {
        this.#c.scope.checkTopic(e, topic)
        out.push(e)
      } catch {}
    }
    this.#relayed.clear()
    return out
  }

  #enqueue (entry?: WireEntry): void {
    if (entry != null) this.#pending.push(entry)
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    setImmediate(() => {
      this.#flushScheduled = false
      const pending = this.#pending
      this.#pending = []
      if (!this.#started) return
      const zone = this.#c.scope.zone
      const byTopic = new Map<string, WireEntry[]>()
      for (const e of pending) {
        const topic = topicFor(e.k, zone)
        const list = byTopic.get(topic)
        if (list == null) byTopic.set(topic, [e])
        else list.push(e)
      }
      // what we relay for our zone's members goes with our own write to the zone (a scheduler's renewal)
      if (this.#relayed.size > 0) {
        const topic = zoneTopic(zone)
        const relayed = this.#takeRelayed(topic)
        if (relayed.length > 0) byTopic.set(topic, [...(byTopic.get(topic) ?? []), ...relayed])
      }
      // our own zone's topic, even right after a renewal moved us
      if (byTopic.size > 1 || !byTopic.has(REGISTRY_TOPIC)) this.refollow()
      for (const [topic, list] of byTopic) {
        for (let i = 0; i < list.length; i += MAX_DELTA_ENTRIES) {
          const entries = list.slice(i, i + MAX_DELTA_ENTRIES)
          this.#c.pubsub.publish(topic, deltaCodec.encode({ entries }))
            .then(() => this.#c.metrics?.gossipOut(1))
            .catch(err => { this.#c.logger.debug({ err: err.message, topic }, 'publishing registry delta failed') })
        }
      }
    })
  }

  /**
   * Gossip validator. Messages are unsigned (the mesh dedupes them by
   * content before this runs): what authenticates a delta is its entries,
   * each signed by its writer. A delta carries one writer's entries, plus
   * (a zone scheduler's renewal) other writers' health it relays; the
   * entries must be certified, unrevoked writers' own signed writes (or
   * fleet-authorised ones), within the writer's gossip rate. An entry from
   * a writer that is unknown yet, past our drift limit or past its quota is
   * ignored, not rejected: the relay did nothing wrong, and anti-entropy
   * brings it later. A delta with nothing newer than what we hold is ignored
   * too, so a replayed or repackaged delta goes no further than one hop.
   * Every entry must travel on its topic: zone-local entries on the zone
   * topic of their writer's certificate, the rest on the fleet topic; a
   * delta that breaks this is rejected and counted, before any crypto.
   */
  readonly #validate = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const { trust, refusals } = this.#c
    // a topic we left (or never followed): not ours to judge or forward
    if (!this.#topics.has(msg.topic)) return TopicValidatorResult.Ignore
    if (msg.type !== 'unsigned') {
      refusals.refuse({ code: 'ERR_SIGNED_GOSSIP' })
      return TopicValidatorResult.Reject
    }
    if (trust.isDenied(peer.toString())) {
      refusals.refuse({ code: 'ERR_DENIED_PEER' })
      return TopicValidatorResult.Reject
    }
    let entries: WireEntry[]
    try {
      entries = deltaCodec.decode(msg.data).entries
    } catch (err) {
      refusals.refuse(err)
      return TopicValidatorResult.Reject
    }
    // one writer's entries, plus other writers' health a zone's scheduler relays with its renewal
    let owner: string | undefined
    const writers = new Set<string>()
    for (const e of entries) {
      writers.add(e.w)
      if (isRelayed(e.k)) continue
      if (owner != null && e.w !== owner) {
        refusals.refuse({ code: 'ERR_FOREIGN_WRITER' })
        return TopicValidatorResult.Reject
      }
      owner = e.w
    }
    for (const w of writers) {
      if (trust.isDenied(w)) {
        refusals.refuse({ code: 'ERR_DENIED_PEER' })
        return TopicValidatorResult.Reject
      }
    }
    for (const e of entries) {
      try {
        this.#c.scope.checkTopic(e, msg.topic)
      } catch (err) {
        refusals.refuse(err, e)
        return TopicValidatorResult.Reject
      }
    }
    const fresh = entries.filter(e => this.#c.replica.wouldWin(e)).sort(byTrustFirst)
    if (fresh.length === 0) return TopicValidatorResult.Ignore
    const { verdict, passed } = await this.#check(fresh, owner)
    if (verdict !== TopicValidatorResult.Accept) return verdict
    this.#validated.set(msg.data, passed)
    return TopicValidatorResult.Accept
  }

  /**
   * The rate is charged before any crypto, so a flood costs its writer, not our CPU. An entry
   * charged already (a relay's repackaged copy of it) is not charged again; and what fails its
   * checks is given back, so entries forged in a writer's name do not spend its budget (a failing
   * delta costs at most one signature check: the loop stops at the first failure). Each writer
   * of a delta pays for its own entries. Relayed entries (health a scheduler sends with its
   * renewal) of a writer we cannot judge yet (unknown to us, past our drift limit or its rate)
   * are left out, not the delta: its owner's renewal must not wait for a newcomer's certificate.
   */
  async #check (fresh: WireEntry[], owner: string | undefined): Promise<{ verdict: TopicValidatorResult, err?: unknown, passed: WireEntry[] }> {
    const { trust, refusals, verifier, quotas } = this.#c
    const unpaid = new Map<string, string[]>()
    for (const e of fresh) {
      const id = entryId(e)
      if (this.#charged.has(id)) continue
      const ids = unpaid.get(e.w)
      if (ids == null) unpaid.set(e.w, [id])
      else ids.push(id)
    }
    const charged = new Map<string, number>()
    const giveBack = (w: string): void => {
      const n = charged.get(w)
      if (n != null) quotas.refund(w, n)
      charged.delete(w)
      for (const id of unpaid.get(w) ?? []) this.#charged.delete(id)
    }
    const giveAllBack = (): void => { for (const w of unpaid.keys()) giveBack(w) }
    // a writer whose entries may be left out: relayed ones, not the delta's owner's
    const droppable = (w: string): boolean => w !== owner
    const dropped = new Set<string>()
    for (const [w, ids] of unpaid) {
      if (trust.claimsFor(w) == null) continue
      if (!quotas.take(w, ids.length)) {
        const err = new QuotaExceededError(`${w} gossips more than its rate`, 'rate')
        refusals.refuse(err, { k: fresh.find(e => e.w === w)!.k, w })
        if (droppable(w)) {
          dropped.add(w)
          continue
        }
        giveAllBack()
        return { verdict: TopicValidatorResult.Ignore, err, passed: [] }
      }
      charged.set(w, ids.length)
    }
    for (const [w, ids] of unpaid) if (!dropped.has(w)) for (const id of ids) this.#charged.add(id)
    while (this.#charged.size > REMEMBERED_CHARGES) this.#charged.delete(this.#charged.values().next().value!)
    let firstErr: unknown
    for (const e of fresh) {
      if (dropped.has(e.w)) continue
      try {
        // the quota first: it costs nothing, the signature does
        this.#c.replica.admit(e)
        await verifier.verify(e)
      } catch (err) {
        refusals.refuse(err, e)
        // an unknown writer may simply not have reached us yet, a quota is the writer's, not the relay's,
        // and drift is measured against our clock, which the relay's may not share
        const soft = err instanceof UnknownWriterError || err instanceof QuotaExceededError || err instanceof ClockDriftError
        if (soft && droppable(e.w)) {
          giveBack(e.w)
          dropped.add(e.w)
          firstErr ??= err
          continue
        }
        giveAllBack()
        return { verdict: soft ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject, err, passed: [] }
      }
    }
    const passed = dropped.size === 0 ? fresh : fresh.filter(e => !dropped.has(e.w))
    if (passed.length === 0) return { verdict: TopicValidatorResult.Ignore, err: firstErr, passed }
    return { verdict: TopicValidatorResult.Accept, passed, ...(firstErr == null ? {} : { err: firstErr }) }
  }

  readonly #onMessage = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (!this.#topics.has(msg.topic)) return
    const entries = this.#validated.get(msg.data)
    if (entries == null) return
    this.#validated.delete(msg.data)
    this.#c.metrics?.gossipIn(1)
    this.#c.apply(entries)
  }
}
