import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { answerPushPull, pushPull, SWIM_SYNC_PROTOCOL } from '../../protocols/swim-sync/index.ts'
import { LinkClosedError, SwimLink, type LinkObserver } from '../../protocols/swim/link.ts'
import { SWIM_PROTOCOL, type Gossip, type MemberRecord, type Reply, type Request, type Unsequenced } from '../../protocols/swim/wire.ts'
import { UnverifiedPeerError } from './errors.ts'
import type { Connection, PeerId, Stream, StreamHandler } from '@libp2p/interface'
import type { Logger } from 'pino'

export type OutgoingRequest = Unsequenced

/** What membership does with what arrives; the transport only moves frames. */
export interface TransportHandler {
  onRequest(from: string, frame: Request, signal: AbortSignal): Promise<Reply | undefined>
  onGossip(from: string, frame: Gossip): void
  /** our records, for a peer that asked for a push-pull */
  records(): MemberRecord[]
  /** a push-pull a peer started sent us these (where we differed) */
  onPushPull(from: string, theirs: MemberRecord[]): void
  /** a peer proved fleet membership on a new connection */
  onConnected(peer: string, outbound: boolean): void
  onDisconnected(peer: string): void
  /** a peer broke the protocol */
  onInvalid(from: string, err: Error): void
}

/** How membership reaches other members: libp2p in the agent, a simulated network in unit tests. */
export interface SwimTransport {
  start(handler: TransportHandler): Promise<void>
  stop(): Promise<void>
  /** Send a ping or indirect-probe request and wait for the reply; dials when not connected. */
  request(peer: string, frame: OutgoingRequest, timeoutMs: number, addrs: readonly string[]): Promise<Reply>
  /**
   * Make sure a link to `peer` is open: dial it and wait for its certificate
   * as need be, within the transport's own (generous) verify timeout.
   */
  link(peer: string, addrs: readonly string[]): Promise<void>
  /** Best effort, only to a peer we are connected to. */
  gossip(peer: string, frame: Gossip): void
  /** Reconcile with `peer`; returns its records where we differed. */
  pushPull(peer: string, records: MemberRecord[], timeoutMs: number, addrs: readonly string[]): Promise<MemberRecord[]>
  connected(peer: string): boolean
  /** Peers connected now that proved fleet membership. */
  peers(): string[]
  /** Dial a peer we only know by its signed addresses so that it presents its certificate. */
  introduce(peer: string, addrs: readonly string[]): void
  hangUp(peer: string): void
}

export interface VerifiedEvent { peerId: PeerId, outbound: boolean }

export interface Libp2pTransportComponents {
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
    dial(target: PeerId | Multiaddr[], options?: { signal?: AbortSignal }): Promise<Connection>
    getConnections(peer?: PeerId): Connection[]
    hangUp(peer: PeerId): Promise<void>
    addEventListener(type: 'peer:disconnect', listener: (evt: CustomEvent<PeerId>) => void): void
    removeEventListener(type: 'peer:disconnect', listener: (evt: CustomEvent<PeerId>) => void): void
  }
  trust: {
    isVerified(peerId: string): boolean
    isDenied(peerId: string): boolean
    addEventListener(type: 'peer:verified', listener: (evt: CustomEvent<VerifiedEvent>) => void): void
    removeEventListener(type: 'peer:verified', listener: (evt: CustomEvent<VerifiedEvent>) => void): void
  }
  logger: Logger
  observer?: LinkObserver
}

export interface Libp2pTransportInit {
  /** How long a new connection may take to prove fleet membership before we use it. @default 5000 */
  verifyTimeoutMs?: number
  /** Push-pull exchanges answered at once. @default 2 */
  maxConcurrentPushPull?: number
}

/**
 * SWIM over libp2p: one long-lived `/gatemesh/swim/1.0.0` stream per peer
 * carries probes, acks and gossip both ways; push-pull uses a stream of its
 * own. Nothing is sent to or accepted from a peer before it proved fleet
 * membership on that connection.
 */
export class Libp2pSwimTransport implements SwimTransport {
  readonly #c: Libp2pTransportComponents
  readonly #verifyTimeoutMs: number
  readonly #maxPushPull: number
  readonly #links = new Map<string, SwimLink>()
  readonly #opening = new Map<string, Promise<SwimLink>>()
  readonly #ids = new Map<string, PeerId>()
  #handler?: TransportHandler
  #pushPulls = 0
  #stopping = new AbortController()

  constructor (components: Libp2pTransportComponents, init: Libp2pTransportInit = {}) {
    this.#c = components
    this.#verifyTimeoutMs = init.verifyTimeoutMs ?? 5000
    this.#maxPushPull = init.maxConcurrentPushPull ?? 2
  }

  async start (handler: TransportHandler): Promise<void> {
    this.#handler = handler
    this.#stopping = new AbortController()
    await this.#c.network.handle(SWIM_PROTOCOL, this.#onLink, { maxInboundStreams: 4 })
    await this.#c.network.handle(SWIM_SYNC_PROTOCOL, this.#onPushPull, { maxInboundStreams: 2 })
    this.#c.trust.addEventListener('peer:verified', this.#onVerified)
    this.#c.network.addEventListener('peer:disconnect', this.#onDisconnect)
  }

  async stop (): Promise<void> {
    this.#stopping.abort()
    this.#c.trust.removeEventListener('peer:verified', this.#onVerified)
    this.#c.network.removeEventListener('peer:disconnect', this.#onDisconnect)
    await this.#c.network.unhandle(SWIM_PROTOCOL)
    await this.#c.network.unhandle(SWIM_SYNC_PROTOCOL)
    for (const link of this.#links.values()) link.close()
    this.#links.clear()
  }

  async request (peer: string, frame: OutgoingRequest, timeoutMs: number, addrs: readonly string[]): Promise<Reply> {
    const deadline = AbortSignal.any([AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs))), this.#stopping.signal])
    const started = performance.now()
    const link = await this.#link(peer, addrs, deadline)
    const left = Math.max(1, timeoutMs - (performance.now() - started))
    return await link.request(frame, left)
  }

  async link (peer: string, addrs: readonly string[]): Promise<void> {
    await this.#link(peer, addrs, AbortSignal.any([AbortSignal.timeout(this.#verifyTimeoutMs), this.#stopping.signal]))
  }

  gossip (peer: string, frame: Gossip): void {
    const link = this.#links.get(peer)
    if (link != null && !link.closed) {
      link.send(frame).catch(() => {})
      return
    }
    if (!this.connected(peer)) return
    this.#link(peer, [], AbortSignal.timeout(this.#verifyTimeoutMs))
      .then(async l => { await l.send(frame) })
      .catch(() => {})
  }

  async pushPull (peer: string, records: MemberRecord[], timeoutMs: number, addrs: readonly string[]): Promise<MemberRecord[]> {
    const signal = AbortSignal.any([AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs))), this.#stopping.signal])
    const conn = await this.#connection(peer, addrs, signal)
    const stream = await conn.newStream(SWIM_SYNC_PROTOCOL, { signal })
    return await pushPull(stream, records, { timeoutMs, signal, onBytes: this.#countSync })
  }

  connected (peer: string): boolean {
    return this.#c.trust.isVerified(peer) && this.#c.network.getConnections(this.#id(peer)).length > 0
  }

  peers (): string[] {
    const out = new Set<string>()
    for (const conn of this.#c.network.getConnections()) {
      const id = conn.remotePeer.toString()
      if (this.#c.trust.isVerified(id)) out.add(id)
    }
    return [...out]
  }

  introduce (peer: string, addrs: readonly string[]): void {
    if (this.#c.trust.isDenied(peer) || this.#c.network.getConnections(this.#id(peer)).length > 0) return
    const targets = dialable(peer, addrs)
    if (targets.length === 0) return
    this.#c.network.dial(targets, { signal: AbortSignal.timeout(this.#verifyTimeoutMs) }).catch(() => {})
  }

  hangUp (peer: string): void {
    this.#links.get(peer)?.close()
    this.#c.network.hangUp(this.#id(peer)).catch(() => {})
  }

  async #link (peer: string, addrs: readonly string[], signal: AbortSignal): Promise<SwimLink> {
    const existing = this.#links.get(peer)
    if (existing != null && !existing.closed) return existing
    let opening = this.#opening.get(peer)
    if (opening == null) {
      // one dial and one stream per peer, however many probes want it at once
      opening = this.#open(peer, addrs, AbortSignal.any([AbortSignal.timeout(this.#verifyTimeoutMs), this.#stopping.signal]))
        .finally(() => { this.#opening.delete(peer) })
      this.#opening.set(peer, opening)
    }
    return await raceAbort(opening, signal)
  }

  async #open (peer: string, addrs: readonly string[], signal: AbortSignal): Promise<SwimLink> {
    const conn = await this.#connection(peer, addrs, signal)
    const stream = await conn.newStream(SWIM_PROTOCOL, { signal })
    return this.#adopt(peer, stream)
  }

  async #connection (peer: string, addrs: readonly string[], signal: AbortSignal): Promise<Connection> {
    if (this.#c.trust.isDenied(peer)) throw new UnverifiedPeerError(`${peer} is denied`)
    const id = this.#id(peer)
    let conn = this.#c.network.getConnections(id).find(c => c.status === 'open')
    if (conn == null) {
      const targets = dialable(peer, addrs)
      conn = await this.#c.network.dial(targets.length > 0 ? targets : id, { signal })
    }
    await this.#verified(peer, signal)
    return conn
  }

  /** Resolve once `peer` passed the certificate exchange; reject on `signal`. */
  async #verified (peer: string, signal: AbortSignal): Promise<void> {
    if (this.#c.trust.isVerified(peer)) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.#c.trust.removeEventListener('peer:verified', onVerified)
        signal.removeEventListener('abort', onAbort)
      }
      const onVerified = (evt: CustomEvent<VerifiedEvent>): void => {
        if (evt.detail.peerId.toString() !== peer) return
        done()
        resolve()
      }
      const onAbort = (): void => {
        done()
        reject(new UnverifiedPeerError(`${peer} did not prove fleet membership in time`))
      }
      if (signal.aborted) {
        onAbort()
        return
      }
      this.#c.trust.addEventListener('peer:verified', onVerified)
      signal.addEventListener('abort', onAbort)
    })
  }

  #adopt (peer: string, stream: Stream): SwimLink {
    const handler = this.#requireHandler()
    const link = new SwimLink(stream, {
      onRequest: async (frame, signal) => await handler.onRequest(peer, frame, signal),
      onGossip: frame => { handler.onGossip(peer, frame) },
      onInvalid: err => { handler.onInvalid(peer, err) }
    }, { observer: this.#c.observer })
    const current = this.#links.get(peer)
    if (current == null || current.closed) this.#links.set(peer, link)
    link.onClose(() => { if (this.#links.get(peer) === link) this.#links.delete(peer) })
    return link
  }

  readonly #onLink = async (stream: Stream, conn: Connection): Promise<void> => {
    const peer = conn.remotePeer.toString()
    try {
      await this.#verified(peer, AbortSignal.any([AbortSignal.timeout(this.#verifyTimeoutMs), this.#stopping.signal]))
    } catch (err: any) {
      stream.abort(err)
      return
    }
    this.#adopt(peer, stream)
  }

  readonly #onPushPull = async (stream: Stream, conn: Connection): Promise<void> => {
    const peer = conn.remotePeer.toString()
    const handler = this.#requireHandler()
    if (this.#pushPulls >= this.#maxPushPull) {
      stream.abort(new LinkClosedError('push-pull busy'))
      return
    }
    this.#pushPulls++
    try {
      await this.#verified(peer, AbortSignal.any([AbortSignal.timeout(this.#verifyTimeoutMs), this.#stopping.signal]))
      const theirs = await answerPushPull(stream, () => handler.records(), { signal: this.#stopping.signal, onBytes: this.#countSync })
      handler.onPushPull(peer, theirs)
    } catch (err: any) {
      stream.abort(err)
      if (err?.code === 'ERR_INVALID_MESSAGE' || err?.code === 'ERR_MALFORMED_MESSAGE' || err?.code === 'ERR_MESSAGE_TOO_LARGE') handler.onInvalid(peer, err)
      else this.#c.logger.debug({ peer, err: err.message }, 'answering push-pull failed')
    } finally {
      this.#pushPulls--
    }
  }

  readonly #countSync = (direction: 'in' | 'out', bytes: number): void => { this.#c.observer?.frame(direction, 'sync', bytes) }

  readonly #onVerified = (evt: CustomEvent<VerifiedEvent>): void => {
    this.#handler?.onConnected(evt.detail.peerId.toString(), evt.detail.outbound)
  }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail.toString()
    this.#links.get(peer)?.close()
    this.#handler?.onDisconnected(peer)
  }

  #id (peer: string): PeerId {
    let id = this.#ids.get(peer)
    if (id == null) {
      id = peerIdFromString(peer)
      if (this.#ids.size > 10_000) this.#ids.clear()
      this.#ids.set(peer, id)
    }
    return id
  }

  #requireHandler (): TransportHandler {
    if (this.#handler == null) throw new Error('swim transport used before start()')
    return this.#handler
  }
}

/** Multiaddrs to dial `peer` at, each ending in its `/p2p/` id; unparseable ones are skipped. */
function dialable (peer: string, addrs: readonly string[]): Multiaddr[] {
  const out: Multiaddr[] = []
  for (const a of addrs) {
    try {
      const ma = multiaddr(a)
      const p2p = ma.getComponents().find(c => c.name === 'p2p')?.value
      if (p2p != null && p2p !== peer) continue
      out.push(p2p == null ? ma.encapsulate(`/p2p/${peer}`) : ma)
    } catch {}
  }
  return out
}

async function raceAbort<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
  })
}
