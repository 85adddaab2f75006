import { TopicValidatorResult } from '@libp2p/gossipsub'
import { deltaCodec, MAX_DELTA_ENTRIES, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { ClockDriftError, QuotaExceededError, UnknownWriterError } from './errors.ts'
import { entryId } from './entry.ts'
import { byTrustFirst } from './order.ts'
import type { EntryVerifier } from './ingress.ts'
import type { WriterQuotas } from './quota.ts'
import type { Refusals } from './refusals.ts'
import type { Replica } from './replica.ts'
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
  /** Install entries that passed validation. */
  apply(entries: WireEntry[]): void
  logger: Logger
}

/**
 * Registry deltas over gossipsub: local writes are batched into deltas and
 * published; arriving deltas go through the validator (certified,
 * unrevoked writers' own signed entries, within their gossip rate) before
 * gossipsub forwards them or the replica sees them.
 */
export class RegistryGossip {
  readonly #c: RegistryGossipInit
  readonly #validated = new WeakMap<Uint8Array, WireEntry[]>()
  /** Ids of entries whose writer was charged for them lately (oldest first). */
  readonly #charged = new Set<string>()
  #pending: WireEntry[] = []
  #flushScheduled = false
  #started = false

  constructor (init: RegistryGossipInit) {
    this.#c = init
  }

  start (): void {
    const { pubsub } = this.#c
    pubsub.topicValidators.set(REGISTRY_TOPIC, this.#validate)
    pubsub.addEventListener('message', this.#onMessage)
    pubsub.subscribe(REGISTRY_TOPIC)
    this.#started = true
  }

  stop (): void {
    const { pubsub } = this.#c
    this.#started = false
    pubsub.unsubscribe(REGISTRY_TOPIC)
    pubsub.removeEventListener('message', this.#onMessage)
    pubsub.topicValidators.delete(REGISTRY_TOPIC)
  }

  /** Queue a local write; queued writes go out together, up to MAX_DELTA_ENTRIES per delta. */
  publish (entry: WireEntry): void {
    this.#pending.push(entry)
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    setImmediate(() => {
      this.#flushScheduled = false
      const pending = this.#pending
      this.#pending = []
      if (!this.#started) return
      for (let i = 0; i < pending.length; i += MAX_DELTA_ENTRIES) {
        const entries = pending.slice(i, i + MAX_DELTA_ENTRIES)
        this.#c.pubsub.publish(REGISTRY_TOPIC, deltaCodec.encode({ entries }))
          .then(() => this.#c.metrics?.gossipOut(1))
          .catch(err => { this.#c.logger.debug({ err: err.message }, 'publishing registry delta failed') })
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
   */
  readonly #validate = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const { trust, refusals, verifier } = this.#c
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
    if (msg.topic !== REGISTRY_TOPIC) return
    const entries = this.#validated.get(msg.data)
    if (entries == null) return
    this.#validated.delete(msg.data)
    this.#c.metrics?.gossipIn(1)
    this.#c.apply(entries)
  }
}
