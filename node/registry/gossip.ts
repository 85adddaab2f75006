import { TopicValidatorResult } from '@libp2p/gossipsub'
import { deltaCodec, MAX_DELTA_ENTRIES, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { topicFor, zoneOfTopic, zoneTopic } from '../../protocols/registry/zones.ts'
import { ClockDriftError, QuotaExceededError, UnknownWriterError } from './errors.ts'
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

  /** Queue a local write; queued writes go out together, per topic, up to MAX_DELTA_ENTRIES per delta. */
  publish (entry: WireEntry): void {
    this.#pending.push(entry)
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
   * each signed by its writer. A delta carries one writer's entries; the
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
    const { trust, refusals, verifier } = this.#c
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
    const writer = entries[0]!.w
    if (entries.some(e => e.w !== writer)) {
      refusals.refuse({ code: 'ERR_FOREIGN_WRITER' })
      return TopicValidatorResult.Reject
    }
    if (trust.isDenied(writer)) {
      refusals.refuse({ code: 'ERR_DENIED_PEER' })
      return TopicValidatorResult.Reject
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
    // The rate is charged before any crypto, so a flood costs its writer, not our CPU. An entry
    // charged already (a relay's repackaged copy of it) is not charged again; and what fails its
    // checks is given back, so entries forged in a writer's name do not spend its budget (a failing
    // delta costs at most one signature check: the loop stops at the first failure).
    const unpaid = fresh.map(entryId).filter(id => !this.#charged.has(id))
    const charge = unpaid.length > 0 && trust.claimsFor(writer) != null
    if (charge && !this.#c.quotas.take(writer, unpaid.length)) {
      refusals.refuse(new QuotaExceededError(`${writer} gossips more than its rate`, 'rate'), { k: fresh[0]!.k, w: writer })
      return TopicValidatorResult.Ignore
    }
    for (const id of unpaid) this.#charged.add(id)
    while (this.#charged.size > REMEMBERED_CHARGES) this.#charged.delete(this.#charged.values().next().value!)
    for (const e of fresh) {
      try {
        // the quota first: it costs nothing, the signature does
        this.#c.replica.admit(e)
        await verifier.verify(e)
      } catch (err) {
        for (const id of unpaid) this.#charged.delete(id)
        if (charge) this.#c.quotas.refund(writer, unpaid.length)
        refusals.refuse(err, e)
        // an unknown writer may simply not have reached us yet, a quota is the writer's, not the relay's,
        // and drift is measured against our clock, which the relay's may not share
        return err instanceof UnknownWriterError || err instanceof QuotaExceededError || err instanceof ClockDriftError ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
      }
    }
    this.#validated.set(msg.data, fresh)
    return TopicValidatorResult.Accept
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
