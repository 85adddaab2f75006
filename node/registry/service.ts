import { serviceCapabilities, serviceDependencies, type PeerId, type PrivateKey, type Startable } from '@libp2p/interface'
import { ServiceLifecycle } from '../mesh/lifecycle.ts'
import { meshNetwork, type MeshComponents } from '../mesh/network.ts'
import { TRUST_CAPABILITY, type TrustService } from '../trust/service.ts'
import { Registry, type RegistryComponents, type RegistryInit, type RegistryMetrics } from './registry.ts'
import type { RegistryStore } from './store.ts'
import type { Logger } from 'pino'

export const REGISTRY_CAPABILITY = '@gatemesh/registry'

export interface RegistryServiceInit extends RegistryInit {
  store: RegistryStore
  logger: Logger
  metrics?: RegistryMetrics
}

export interface RegistryServiceComponents extends MeshComponents {
  privateKey: PrivateKey
  pubsub: RegistryComponents['pubsub']
  trust: TrustService
}

/**
 * The replicated registry as a libp2p service. Built after `pubsub` and
 * `trust` in the node's `services` (its constructor takes both).
 */
export function registry (init: RegistryServiceInit): (components: RegistryServiceComponents) => RegistryService {
  return components => new RegistryService(components, init)
}

/**
 * Loads in `beforeStart`, after trust's: stored entries are checked against
 * this node's own certificate, and the revocations on disk are enforced
 * before bootstrap or mDNS dial (their `start`) and before transports
 * listen (`afterStart`), so a revoked peer is refused from the first
 * connection. Subscribes and serves anti-entropy in `afterStart`, once
 * gossipsub has started (it refuses subscriptions before).
 */
export class RegistryService extends Registry implements Startable {
  readonly lifecycle: ServiceLifecycle
  readonly [serviceCapabilities]: string[] = [REGISTRY_CAPABILITY]
  readonly [serviceDependencies]: string[] = [TRUST_CAPABILITY, '@libp2p/pubsub']
  readonly [Symbol.toStringTag] = REGISTRY_CAPABILITY
  readonly #trust: TrustService
  readonly #logger: Logger

  constructor (components: RegistryServiceComponents, init: RegistryServiceInit) {
    const { store, logger, metrics, ...options } = init
    super({
      peerId: components.peerId,
      privateKey: components.privateKey,
      pubsub: components.pubsub,
      network: meshNetwork(components),
      trust: components.trust,
      store,
      logger,
      ...(metrics == null ? {} : { metrics })
    }, options)
    this.#trust = components.trust
    this.#logger = logger
    this.lifecycle = new ServiceLifecycle('registry', () => [components.trust])
  }

  async beforeStart (): Promise<void> {
    await this.lifecycle.run('beforeStart', async () => { await this.load() })
  }

  override async start (): Promise<void> {
    await this.lifecycle.run('start', () => {})
  }

  async afterStart (): Promise<void> {
    await this.lifecycle.run('afterStart', async () => {
      await super.start()
      this.#trust.addEventListener('peer:verified', this.#onVerified)
    })
  }

  async beforeStop (): Promise<void> {
    await this.lifecycle.stop(async ran => {
      if (!ran.has('afterStart')) return
      this.#trust.removeEventListener('peer:verified', this.#onVerified)
      await super.stop()
    })
  }

  override async stop (): Promise<void> {}

  /**
   * A joining or restarted node catches up through the peers it dials until
   * one exchange has completed. Not on every connection after that: SWIM
   * probes random members, so in a large zone an agent opens a connection
   * or two a second, and a whole anti-entropy round on each was most of its
   * idle traffic (README, Cost model). A member coming back after a
   * partition or a stall is synced with by membership instead
   * (`catchUpWith`), and the periodic round covers the rest.
   */
  readonly #onVerified = (evt: CustomEvent<{ peerId: PeerId, outbound: boolean }>): void => {
    if (!evt.detail.outbound || this.#caughtUp) return
    this.catchUpWith(evt.detail.peerId, 'initial sync failed')
  }

  #caughtUp = false

  /** One anti-entropy round with `peer` now, in the background; failures are only logged. */
  catchUpWith (peer: PeerId, what = 'catch-up sync failed'): void {
    this.syncWith(peer).then(() => { this.#caughtUp = true }, err => {
      this.#logger.debug({ peer: peer.toString(), err: err.message }, what)
    })
  }
}
