import type { AbortOptions, ComponentLogger, Connection, Libp2pEvents, PeerId, Stream, StreamHandler, StreamHandlerOptions, TypedEventTarget } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

type DialTarget = PeerId | Multiaddr | Multiaddr[]

/**
 * The libp2p components a gatemesh service reaches peers through: the parts
 * of `@libp2p/interface-internal`'s ConnectionManager, Registrar and
 * AddressManager it calls (that package is libp2p's, not a dependency of ours).
 */
export interface MeshComponents {
  peerId: PeerId
  connectionManager: {
    openConnection(peer: DialTarget, options?: AbortOptions & { priority?: number }): Promise<Connection>
    openStream(peer: DialTarget, protocol: string | string[], options?: AbortOptions): Promise<Stream>
    closeConnections(peer: PeerId, options?: AbortOptions): Promise<void>
    getConnections(peerId?: PeerId): Connection[]
  }
  registrar: {
    handle(protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>
    unhandle(protocol: string, options?: AbortOptions): Promise<void>
  }
  addressManager: { getAddresses(): Multiaddr[] }
  events: TypedEventTarget<Libp2pEvents>
  logger: ComponentLogger
}

/** Connection events a service follows. */
export type MeshEvent = 'connection:open' | 'connection:close' | 'peer:connect' | 'peer:disconnect'

/**
 * The one path every gatemesh service takes to peers: the node's connection
 * manager (dials, streams, connections, hang-ups), registrar (protocol
 * handlers) and event bus. The same calls `Libp2p` makes for
 * `dial`/`dialProtocol`/`handle` (libp2p/dist/src/libp2p.js), built from the
 * components libp2p hands each service, so no service holds the node.
 */
export interface MeshNetwork {
  handle(protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>
  unhandle(protocol: string, options?: AbortOptions): Promise<void>
  dial(peer: DialTarget, options?: AbortOptions): Promise<Connection>
  dialProtocol(peer: DialTarget, protocol: string | string[], options?: AbortOptions): Promise<Stream>
  hangUp(peer: PeerId, options?: AbortOptions): Promise<void>
  getConnections(peer?: PeerId): Connection[]
  getMultiaddrs(): Multiaddr[]
  addEventListener<K extends MeshEvent>(type: K, listener: (evt: Libp2pEvents[K]) => void): void
  removeEventListener<K extends MeshEvent>(type: K, listener: (evt: Libp2pEvents[K]) => void): void
}

export function meshNetwork (components: MeshComponents): MeshNetwork {
  return {
    handle: async (protocol, handler, options) => { await components.registrar.handle(protocol, handler, options) },
    unhandle: async (protocol, options) => { await components.registrar.unhandle(protocol, options) },
    // userland dials go first in the dial queue, as Libp2p.dial does
    dial: async (peer, options = {}) => await components.connectionManager.openConnection(peer, { priority: 75, ...options }),
    dialProtocol: async (peer, protocol, options = {}) => await components.connectionManager.openStream(peer, Array.isArray(protocol) ? protocol : [protocol], options),
    hangUp: async (peer, options) => { await components.connectionManager.closeConnections(peer, options) },
    getConnections: peer => components.connectionManager.getConnections(peer),
    getMultiaddrs: () => components.addressManager.getAddresses(),
    addEventListener: (type, listener) => { components.events.addEventListener(type, listener as any) },
    removeEventListener: (type, listener) => { components.events.removeEventListener(type, listener as any) }
  }
}

