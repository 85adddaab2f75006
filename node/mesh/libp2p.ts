import { createHash } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify, type Identify } from '@libp2p/identify'
import { mdns } from '@libp2p/mdns'
import { ping, type Ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { createLibp2p, type Libp2pOptions, type ServiceFactoryMap } from 'libp2p'
import type { Message } from '@libp2p/gossipsub'
import type { ConnectionGater, ConnectionProtector, Libp2p, PeerDiscovery, PrivateKey, ServiceMap } from '@libp2p/interface'

export type MeshServices = { identify: Identify, ping: Ping, pubsub: GossipSub }
/** A mesh node; `S` are the services a caller adds (the agent's trust, registry, ...). */
export type Mesh<S extends ServiceMap = Record<never, never>> = Libp2p<MeshServices & S>

export interface MeshInit<S extends ServiceMap = Record<never, never>> {
  privateKey: PrivateKey
  /** The fleet's private-network key. Required: without it libp2p would run an open network. */
  networkKey: Uint8Array
  listen: string[]
  announce?: string[]
  bootstrap?: string[]
  mdns?: boolean
  gater: ConnectionGater
  /** Upper bound on open connections; libp2p prunes past it. @default 32 */
  maxConnections?: number
  /** The agent's version, for identify. */
  version: string
  /**
   * More services, started and stopped with the node beside identify, ping
   * and pubsub (which they may use: `components.pubsub`).
   */
  services?: { [K in keyof S]: (components: MeshComponentsOf<S>) => S[K] }
}

/** What libp2p hands a service factory: its components and every service. */
export type MeshComponentsOf<S extends ServiceMap> = Parameters<ServiceFactoryMap<MeshServices & S>['pubsub']>[0]

export class MissingNetworkKeyError extends Error {
  readonly code = 'ERR_MISSING_NETWORK_KEY'
  override readonly name = 'MissingNetworkKeyError'
}

/** Largest write pnet encrypts in one call. */
export const PNET_MAX_WRITE = 64 * 1024

/**
 * @libp2p/pnet XORs everything queued on a connection in one call into
 * xsalsa20's WebAssembly memory, which cannot grow past 64 MB. Under load
 * (bundle chunks to several peers) the queue outgrows it, the write throws
 * `WebAssembly.Memory.grow(): Maximum memory size exceeded` and the stream
 * dies. Capping each write at the muxer's frame size keeps it far below.
 */
function cappedPreSharedKey (psk: Uint8Array): (components: any) => ConnectionProtector {
  const factory = preSharedKey({ psk })
  return components => {
    const inner = (factory as (c: unknown) => ConnectionProtector)(components)
    return {
      async protect (connection, options) {
        const boxed = await inner.protect(connection, options)
        ;(boxed as { maxMessageSize?: number }).maxMessageSize = PNET_MAX_WRITE
        return boxed
      }
    }
  }
}

/**
 * A gossip message's id: the sha256 of its topic and every byte of its data.
 * Messages are unsigned (the registry's entries carry their writers'
 * signatures), so the id must cover the whole content: a forged copy of a
 * genuine message differs in some byte, gets another id, and cannot make
 * gossipsub drop the genuine one as already seen. Two messages share an id
 * only when they are the same bytes, and then they verify alike.
 */
export function contentMessageId (msg: Pick<Message, 'topic' | 'data'>): Uint8Array {
  return createHash('sha256').update(msg.topic).update('\u0000').update(msg.data).digest()
}

/**
 * The libp2p node every agent runs: TCP, the fleet's private network, Noise,
 * Yamux, identify, ping and gossipsub carrying unsigned, content-addressed
 * messages. Not started.
 */
export async function createMesh<S extends ServiceMap = Record<never, never>> (init: MeshInit<S>): Promise<Mesh<S>> {
  // libp2p silently runs unprotected when connectionProtector is absent
  if (!(init.networkKey instanceof Uint8Array) || init.networkKey.byteLength === 0) {
    throw new MissingNetworkKeyError('refusing to start without the fleet network key')
  }
  const peerDiscovery: Array<(components: any) => PeerDiscovery> = []
  if ((init.bootstrap ?? []).length > 0) peerDiscovery.push(bootstrap({ list: init.bootstrap ?? [], timeout: 100 }))
  if (init.mdns === true) peerDiscovery.push(mdns({ serviceTag: 'gatemesh.local' }))
  const options: Libp2pOptions<MeshServices & S> = {
    start: false,
    privateKey: init.privateKey,
    addresses: { listen: init.listen, announce: init.announce ?? [] },
    transports: [tcp()],
    connectionProtector: cappedPreSharedKey(init.networkKey),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionGater: init.gater,
    connectionManager: { maxConnections: init.maxConnections ?? 32, dialTimeout: 5000 },
    // libp2p pings every connection from both ends every 10 s, each time on a
    // new stream with protocol negotiation: ~8 frames per ping, the largest
    // fixed cost of an idle connection after gossip. SWIM probes the members
    // already; a dead connection is still found and closed within a minute.
    connectionMonitor: { pingInterval: 60_000 },
    peerDiscovery,
    nodeInfo: { name: 'gatemesh', version: init.version },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        // No per-message signature: every registry entry already carries its
        // writer's, which the topic validator checks (README, Registry, "Gossip
        // without a second signature"). gossipsub then dedupes by content
        // before the validator runs, so a copy costs a hash, not a verify.
        globalSignaturePolicy: 'StrictNoSign',
        msgIdFn: contentMessageId,
        allowPublishToZeroTopicPeers: true,
        // a delta goes to the mesh (D peers) and spreads from there, not to every subscriber
        floodPublish: false,
        emitSelf: false,
        // Each heartbeat sends IHAVE gossip to Dlazy peers per topic: with
        // messages in the window, that was most of an idle agent's frames
        // (at N = 20, heartbeat 700 ms and Dlazy 4 → 1000 ms and 2 took the
        // agent from 3.3 % to 1.9 % of a core). The mesh push carries the
        // deltas; IHAVE only repairs a copy the mesh missed, anti-entropy
        // the rest (README, Cost model).
        heartbeatInterval: 1000,
        // Each delta reaches an agent about once per mesh peer and leaves it
        // to each of them again, so the mesh degree multiplies every agent's
        // gossip bytes and CPU. libp2p's D = 6 (up to 12) is sized for
        // public networks with scored, possibly hostile peers; here every
        // peer holds a fleet certificate, and anti-entropy repairs what a
        // thinner mesh misses. Measured with `npm run bench -- scale`
        // (README, Cost model).
        D: 4,
        Dlo: 3,
        Dhi: 6,
        Dscore: 2,
        Dlazy: 2,
        // Every peer here proved fleet membership with a certificate, and a
        // site's gateways often share one NAT address: gossipsub's default
        // penalty for more than 10 peers per IP would graylist the fleet.
        scoreParams: { IPColocationFactorWeight: 0 },
        // gossipsub 1.2 sends every mesh peer an IDONTWANT, an RPC of its own,
        // for each new message of 512 bytes or more, which a signed delta of
        // a few entries already is; on a fast network the duplicate it would
        // spare is usually under way already. Kept for large messages only.
        idontwantMinDataSize: 16384
      }),
      ...init.services
    } as ServiceFactoryMap<MeshServices & S>
  }
  return await createLibp2p(options)
}
