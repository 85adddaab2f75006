import { TopicValidatorResult } from '@libp2p/gossipsub'
import { deltaCodec, MAX_DELTA_ENTRIES, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { ClockDriftError, QuotaExceededError, UnknownWriterError } from './errors.ts'
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
 * unrevoked authors writing their own signed entries, within their gossip
 * rate) before gossipsub forwards them or the replica sees them.
 */
export class RegistryGossip {
  readonly #c: RegistryGossipInit
  readonly #validated = new WeakMap<Uint8Array, WireEntry[]>()
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
   * Gossip validator: only certified fleet members' own signed writes pass.
   * Every entry is verified against its writer's certificate and signature,
   * so a relay that is still in the certificate exchange may pass messages
   * on; a relay or author that failed it (or was revoked) is rejected
   * outright. An author past its gossip rate is ignored, not rejected: the
   * relay did nothing wrong, and anti-entropy brings what was in quota.
   */
  readonly #validate = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    const { trust, refusals } = this.#c
    if (msg.type !== 'signed') {
      refusals.refuse({ code: 'ERR_UNSIGNED_GOSSIP' })
      return TopicValidatorResult.Reject
    }
    const source = peer.toString()
    const author = msg.from.toString()
    if (trust.isDenied(source) || trust.isDenied(author)) {
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
    if (entries.some(e => e.w !== author)) {
      refusals.refuse({ code: 'ERR_FOREIGN_WRITER' })
      return TopicValidatorResult.Reject
    }
    const fresh = entries.filter(e => this.#c.replica.wouldWin(e)).sort(byTrustFirst)
    // the rate is charged before any crypto, so a flood costs its author, not our CPU
    if (fresh.length > 0 && trust.claimsFor(author) != null && !this.#c.quotas.take(author, fresh.length)) {
      refusals.refuse(new QuotaExceededError(`${author} gossips more than its rate`, 'rate'), { k: fresh[0]!.k, w: author })
      return TopicValidatorResult.Ignore
    }
    for (const e of fresh) {
      try {
        // the quota first: it costs nothing, the signature does
        this.#c.replica.admit(e)
        await this.#c.verifier.verify(e)
      } catch (err) {
        refusals.refuse(err, e)
        // an unknown writer may simply not have reached us yet, a quota is the author's, not the relay's,
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
