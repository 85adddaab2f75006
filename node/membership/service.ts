import { peerIdFromString } from '@libp2p/peer-id'
import { serviceCapabilities, serviceDependencies, type PrivateKey, type Startable } from '@libp2p/interface'
import { ServiceLifecycle, type Ordered } from '../mesh/lifecycle.ts'
import { meshNetwork, type MeshComponents } from '../mesh/network.ts'
import { capability, dependencies } from '../mesh/part.ts'
import { Membership, type IncarnationStore, type MembershipInit, type MembershipMetrics } from './membership.ts'
import { Libp2pSwimTransport, type Libp2pTransportComponents, type Libp2pTransportInit } from './transport.ts'
import type { RegistryService } from '../registry/service.ts'
import type { TrustService } from '../trust/service.ts'
import type { LinkObserver } from '../../protocols/swim/link.ts'
import type { Logger } from 'pino'

export interface MembershipServiceInit extends MembershipInit {
  logger: Logger
  metrics?: MembershipMetrics & { swimFrame?(direction: 'in' | 'out', type: string, bytes: number): void }
  incarnations?: IncarnationStore
  transport?: Libp2pTransportInit
  /**
   * Services that must have started first, beyond trust and the registry
   * (the agent's: the part that writes `node/<self>`). @default []
   */
  after?: string[]
}

export interface MembershipServiceComponents extends MeshComponents {
  privateKey: PrivateKey
  trust: TrustService
  registry: RegistryService
}

/**
 * SWIM membership as a libp2p service, over the node's connection manager
 * and registrar. Built after `trust` and `registry` in `services`.
 */
export function membership (init: MembershipServiceInit): (components: MembershipServiceComponents) => MembershipService {
  return components => new MembershipService(components, init)
}

/**
 * Starts in `afterStart`, after the registry subscribed: it reads the node
 * records at start and follows their changes.
 */
export class MembershipService extends Membership implements Startable, Ordered {
  readonly lifecycle: ServiceLifecycle
  readonly [serviceCapabilities]: string[] = [capability('membership')]
  readonly [serviceDependencies]: string[]
  readonly [Symbol.toStringTag] = capability('membership')
  readonly #registry: RegistryService

  constructor (components: MembershipServiceComponents, init: MembershipServiceInit) {
    const { logger, metrics, incarnations, transport, after = [], ...options } = init
    const network = meshNetwork(components)
    const observer: LinkObserver | undefined = metrics?.swimFrame == null ? undefined : { frame: (d, t, b) => { metrics.swimFrame?.(d, t, b) } }
    const transportComponents: Libp2pTransportComponents = { network, trust: components.trust, logger, ...(observer == null ? {} : { observer }) }
    super({
      peerId: components.peerId,
      privateKey: components.privateKey,
      registry: components.registry,
      trust: components.trust,
      transport: new Libp2pSwimTransport(transportComponents, transport),
      addresses: () => network.getMultiaddrs().map(a => a.toString()),
      logger,
      ...(metrics == null ? {} : { metrics }),
      ...(incarnations == null ? {} : { incarnations })
    }, options)
    this.#registry = components.registry
    const deps = ['trust', 'registry', ...after]
    this[serviceDependencies] = deps.map(capability)
    this.lifecycle = new ServiceLifecycle('membership', () => dependencies(components, deps))
  }

  async beforeStart (): Promise<void> { await this.lifecycle.run('beforeStart', () => {}) }
  override async start (): Promise<void> { await this.lifecycle.run('start', () => {}) }
  async afterStart (): Promise<void> {
    await this.lifecycle.run('afterStart', async () => {
      this.addEventListener('member:state', this.#onState)
      await super.start()
    })
  }

  async beforeStop (): Promise<void> {
    await this.lifecycle.stop(async ran => {
      this.removeEventListener('member:state', this.#onState)
      if (ran.has('afterStart')) await super.stop()
    })
  }

  /**
   * A member back from dead (a healed partition, a long stall, a restart)
   * may hold entries this node missed, and miss ours: one anti-entropy
   * round with it, as the registry no longer syncs on every new connection.
   * A refuted suspicion does not count: every node that suspected the
   * member would sync with it at once, and on a loaded machine that burst
   * made it fall behind and be suspected again (a storm of 50 agents on 2
   * cores). What it missed while suspect reaches it through the periodic
   * anti-entropy round.
   */
  readonly #onState = (evt: CustomEvent<{ peerId: string, state: string, previous: string | undefined }>): void => {
    const { peerId, state, previous } = evt.detail
    if (state !== 'alive' || previous !== 'dead') return
    try {
      this.#registry.catchUpWith(peerIdFromString(peerId))
    } catch {}
  }
  override async stop (): Promise<void> {}
}
