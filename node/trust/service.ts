import { serviceCapabilities, type ConnectionGater, type PeerId, type Startable } from '@libp2p/interface'
import { meshNetwork, type MeshComponents } from '../mesh/network.ts'
import { ServiceLifecycle } from '../mesh/lifecycle.ts'
import { PeerTrust, type PeerTrustInit, type PeerTrustMetrics } from './peer-trust.ts'
import type { Logger } from 'pino'

export const TRUST_CAPABILITY = '@gatemesh/trust'

export interface TrustServiceInit extends PeerTrustInit {
  logger: Logger
  metrics?: PeerTrustMetrics
}

/**
 * Fleet trust as a libp2p service: the certificate exchange on every
 * connection, through the node's registrar and connection events.
 */
export function peerTrust (init: TrustServiceInit): (components: MeshComponents) => TrustService {
  return components => new TrustService(components, init)
}

/**
 * Its work happens in `beforeStart`, before any libp2p component starts:
 * bootstrap and mDNS dial from their `start` and transports listen in
 * `afterStart`, and every connection must meet the exchange. It first
 * verifies this node's own certificate: an agent with a bad one would only
 * be refused everywhere, so it fails the start instead.
 */
export class TrustService extends PeerTrust implements Startable {
  readonly lifecycle = new ServiceLifecycle('trust', () => [])
  readonly [serviceCapabilities]: string[] = [TRUST_CAPABILITY]
  readonly [Symbol.toStringTag] = TRUST_CAPABILITY
  readonly #self: string

  constructor (components: MeshComponents, init: TrustServiceInit) {
    super({ peerId: components.peerId, logger: init.logger, ...(init.metrics == null ? {} : { metrics: init.metrics }) }, init)
    this.#self = components.peerId.toString()
    this.attach(meshNetwork(components))
  }

  async beforeStart (): Promise<void> {
    await this.lifecycle.run('beforeStart', async () => {
      await this.learnCertificate(this.certificate, this.#self)
      await super.start()
    })
  }

  override async start (): Promise<void> {
    await this.lifecycle.run('start', () => {})
  }

  async afterStart (): Promise<void> {
    await this.lifecycle.run('afterStart', () => {})
  }

  async beforeStop (): Promise<void> {
    await this.lifecycle.stop(async ran => { if (ran.has('beforeStart')) await super.stop() })
  }

  override async stop (): Promise<void> {}
}

/**
 * The connection gater goes into the libp2p config before the node, and so
 * its trust service, exists: it asks the service once there is one.
 */
export function trustGater (trust: () => Pick<PeerTrust, 'isDenied'> | undefined): ConnectionGater {
  const denied = (peerId: PeerId): boolean => trust()?.isDenied(peerId.toString()) === true
  return {
    denyDialPeer: denied,
    denyInboundEncryptedConnection: denied,
    denyOutboundEncryptedConnection: denied
  }
}
