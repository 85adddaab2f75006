import { TypedEventEmitter } from '@libp2p/interface'
import { answerCertificate, CERT_PROTOCOL, DEFAULT_CERT_TIMEOUT_MS, offerCertificate } from '../../protocols/cert-exchange/index.ts'
import { peerIdFromString } from '@libp2p/peer-id'
import { verifyNodeCertificate, type NodeClaims } from '../identity/certificate.ts'
import { OwnCertificateError, RevokedPeerError } from './errors.ts'
import type { Connection, ConnectionGater, PeerId, Startable, Stream, StreamHandler } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'

export interface PeerTrustEvents {
  /** A connected peer proved fleet membership. */
  'peer:verified': CustomEvent<{ peerId: PeerId, claims: NodeClaims, outbound: boolean }>
  /** A peer failed the certificate exchange, or the fleet revoked it, and is now denied. */
  'peer:denied': CustomEvent<{ peerId: string, reason: string }>
}

export interface PeerTrustMetrics {
  denied(reason: string): void
  /** Peers the fleet revoked, as this node enforces them. */
  revokedPeers?(count: number): void
  /** Connected peers through the certificate exchange, on every change (no polling). */
  verifiedPeers?(count: number): void
  /** A peer that was not connected proved fleet membership: a new connection, which we dialled (outbound) or accepted. */
  peerConnected?(outbound: boolean): void
}

export interface PeerTrustComponents {
  peerId: PeerId
  logger: Logger
  metrics?: PeerTrustMetrics
}

/** The parts of libp2p the trust service drives, handed over at start. */
export interface TrustNetwork {
  handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number }): Promise<void>
  unhandle(protocol: string): Promise<void>
  hangUp(peer: PeerId): Promise<void>
  getConnections(peer?: PeerId): Connection[]
  addEventListener(type: 'connection:open' | 'peer:disconnect', listener: (evt: CustomEvent<any>) => void): void
  removeEventListener(type: 'connection:open' | 'peer:disconnect', listener: (evt: CustomEvent<any>) => void): void
}

export interface PeerTrustInit {
  fleetPublicKey: KeyObject
  /** This node's certificate, presented to every peer. */
  certificate: string
  /** A peer that has not proven membership within this time is disconnected. @default DEFAULT_CERT_TIMEOUT_MS */
  certTimeoutMs?: number
}

/**
 * Fleet membership at the connection level. Every new connection runs the
 * certificate exchange; a peer whose certificate is missing, expired, for
 * another peer id or from another fleet is hung up on and denied by the
 * connection gater for the life of the process. A peer the fleet revoked
 * (the registry tells, from `revoked/<peerId>`) is hung up on and denied for
 * good: its certificate no longer counts anywhere. Also keeps the
 * certificates learnt from the registry so relayed writes can be attributed,
 * and this node's own certificate, which renewal replaces.
 */
export class PeerTrust extends TypedEventEmitter<PeerTrustEvents> implements Startable {
  readonly fleetPublicKey: KeyObject
  #certificate: string
  readonly #certTimeoutMs: number
  readonly #c: PeerTrustComponents
  readonly #claims = new Map<string, NodeClaims>()
  /** the certificate text each entry of #claims came from */
  readonly #certs = new Map<string, string>()
  readonly #revoked = new Map<string, string>()
  readonly #verified = new Set<string>()
  readonly #denied = new Map<string, string>()
  readonly #pending = new Map<string, NodeJS.Timeout>()
  #network?: TrustNetwork

  constructor (components: PeerTrustComponents, init: PeerTrustInit) {
    super()
    this.#c = components
    this.fleetPublicKey = init.fleetPublicKey
    this.#certificate = init.certificate
    this.#certTimeoutMs = init.certTimeoutMs ?? DEFAULT_CERT_TIMEOUT_MS
  }

  /** The gater goes into the libp2p config, before the node exists. */
  gater (): ConnectionGater {
    const denied = (peerId: PeerId): boolean => this.#denied.has(peerId.toString())
    return {
      denyDialPeer: denied,
      denyInboundEncryptedConnection: denied,
      denyOutboundEncryptedConnection: denied
    }
  }

  attach (network: TrustNetwork): void {
    this.#network = network
  }

  async start (): Promise<void> {
    const network = this.#requireNetwork()
    await network.handle(CERT_PROTOCOL, this.#answer, { maxInboundStreams: 4 })
    network.addEventListener('connection:open', this.#onConnection)
    network.addEventListener('peer:disconnect', this.#onDisconnect)
  }

  async stop (): Promise<void> {
    const network = this.#requireNetwork()
    network.removeEventListener('connection:open', this.#onConnection)
    network.removeEventListener('peer:disconnect', this.#onDisconnect)
    await network.unhandle(CERT_PROTOCOL)
    for (const t of this.#pending.values()) clearTimeout(t)
    this.#pending.clear()
  }

  /** This node's certificate, as presented to peers. */
  get certificate (): string {
    return this.#certificate
  }

  /** Present `cert` from now on (a renewal): it must name this node and verify against the fleet key. */
  async setCertificate (cert: string): Promise<NodeClaims> {
    let claims: NodeClaims
    try {
      claims = await verifyNodeCertificate(cert, this.fleetPublicKey, this.#c.peerId.toString())
    } catch (err: any) {
      throw new OwnCertificateError(`the new certificate is not usable: ${String(err.message)}`, { cause: err })
    }
    this.#certificate = cert
    this.#remember(this.#c.peerId.toString(), cert, claims)
    return claims
  }

  /** Claims of a valid, unexpired certificate for `peerId`, when known and not revoked. */
  claimsFor (peerId: string): NodeClaims | undefined {
    const claims = this.#claims.get(peerId)
    if (claims == null) return undefined
    if (claims.exp * 1000 <= Date.now()) {
      this.#claims.delete(peerId)
      this.#certs.delete(peerId)
      return undefined
    }
    return claims
  }

  /** Verify a certificate for `peerId`; the one that expires last is kept. Refuses a revoked peer. */
  async learnCertificate (cert: string, peerId: string): Promise<NodeClaims> {
    if (this.#revoked.has(peerId)) throw new RevokedPeerError(`the fleet revoked ${peerId}`)
    const claims = await verifyNodeCertificate(cert, this.fleetPublicKey, peerId)
    if (this.#revoked.has(peerId)) throw new RevokedPeerError(`the fleet revoked ${peerId}`)
    return this.#remember(peerId, cert, claims)
  }

  knowsCertificate (cert: string, peerId: string): boolean {
    return this.#certs.get(peerId) === cert
  }

  isRevoked (peerId: string): boolean {
    return this.#revoked.has(peerId)
  }

  /**
   * The fleet revoked `peerId`: forget its certificate, deny it at the
   * gater and in every validator, and hang up on it now.
   */
  revoke (peerId: string, reason: string): void {
    if (this.#revoked.has(peerId)) return
    this.#revoked.set(peerId, reason)
    this.#c.metrics?.revokedPeers?.(this.#revoked.size)
    let id
    try {
      id = peerIdFromString(peerId)
    } catch {
      return
    }
    void this.#deny(id, reason, 'peer revoked by the fleet')
  }

  revokedPeers (): string[] {
    return [...this.#revoked.keys()]
  }

  #remember (peerId: string, cert: string, claims: NodeClaims): NodeClaims {
    const known = this.claimsFor(peerId)
    if (known != null && known.exp > claims.exp) return known
    this.#claims.set(peerId, claims)
    this.#certs.set(peerId, cert)
    return claims
  }

  isVerified (peerId: string): boolean {
    return this.#verified.has(peerId) && this.claimsFor(peerId) != null
  }

  isDenied (peerId: string): boolean {
    return this.#denied.has(peerId)
  }

  verifiedPeers (): PeerId[] {
    const network = this.#requireNetwork()
    const seen = new Map<string, PeerId>()
    for (const conn of network.getConnections()) {
      const id = conn.remotePeer.toString()
      if (this.isVerified(id)) seen.set(id, conn.remotePeer)
    }
    return [...seen.values()]
  }

  /** Resolve once `peerId` passed the certificate exchange; reject with the signal's reason on abort. */
  async whenVerified (peerId: string, signal: AbortSignal): Promise<void> {
    if (this.isVerified(peerId)) return
    signal.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.removeEventListener('peer:verified', onVerified)
        signal.removeEventListener('abort', onAbort)
      }
      const onVerified = (evt: CustomEvent<{ peerId: PeerId }>): void => {
        if (evt.detail.peerId.toString() !== peerId) return
        done()
        resolve()
      }
      const onAbort = (): void => {
        done()
        reject(signal.reason)
      }
      this.addEventListener('peer:verified', onVerified)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  deniedPeers (): Array<{ peerId: string, reason: string }> {
    return [...this.#denied].map(([peerId, reason]) => ({ peerId, reason }))
  }

  async #deny (peerId: PeerId, reason: string, msg = 'peer denied: no valid fleet certificate'): Promise<void> {
    const id = peerId.toString()
    this.#denied.set(id, reason)
    if (this.#verified.delete(id)) this.#c.metrics?.verifiedPeers?.(this.#verified.size)
    this.#claims.delete(id)
    this.#certs.delete(id)
    clearTimeout(this.#pending.get(id))
    this.#pending.delete(id)
    this.#c.metrics?.denied(reason)
    this.#c.logger.warn({ peer: id, reason }, msg)
    this.safeDispatchEvent('peer:denied', { detail: { peerId: id, reason } })
    await this.#network?.hangUp(peerId).catch(() => {})
  }

  #markVerified (peerId: PeerId, cert: string, claims: NodeClaims, outbound: boolean): void {
    const id = peerId.toString()
    clearTimeout(this.#pending.get(id))
    this.#pending.delete(id)
    // revoked while the exchange ran
    if (this.#denied.has(id)) return
    this.#remember(id, cert, claims)
    const first = !this.#verified.has(id)
    this.#verified.add(id)
    if (first) {
      this.#c.metrics?.verifiedPeers?.(this.#verified.size)
      this.#c.metrics?.peerConnected?.(outbound)
      this.#c.logger.debug({ peer: id, role: claims.role }, 'peer verified')
      this.safeDispatchEvent('peer:verified', { detail: { peerId, claims, outbound } })
    }
  }

  readonly #onConnection = (evt: CustomEvent<Connection>): void => {
    const conn = evt.detail
    const peerId = conn.remotePeer
    const id = peerId.toString()
    if (this.#denied.has(id)) {
      conn.abort(new Error('peer is denied'))
      return
    }
    if (conn.direction === 'outbound') {
      this.#offer(conn).catch(() => {})
    } else if (!this.#verified.has(id) && !this.#pending.has(id)) {
      // the dialer must present its certificate soon, or it goes
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        if (!this.#verified.has(id)) {
          this.#c.logger.info({ peer: id }, 'no certificate presented in time; disconnecting')
          this.#network?.hangUp(peerId).catch(() => {})
        }
      }, this.#certTimeoutMs)
      timer.unref()
      this.#pending.set(id, timer)
    }
  }

  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    if (this.#verified.delete(id)) this.#c.metrics?.verifiedPeers?.(this.#verified.size)
    clearTimeout(this.#pending.get(id))
    this.#pending.delete(id)
  }

  async #offer (conn: Connection): Promise<void> {
    const peerId = conn.remotePeer
    let remote: string
    try {
      const stream = await conn.newStream(CERT_PROTOCOL, { signal: AbortSignal.timeout(this.#certTimeoutMs) })
      remote = await offerCertificate(stream, this.#certificate, { timeoutMs: this.#certTimeoutMs })
    } catch (err: any) {
      // no certificate came back (it refused ours, does not speak the protocol, or
      // went away): not proven, so not kept — but nothing proves it hostile either
      this.#c.logger.info({ peer: peerId.toString(), err: err.message }, 'certificate exchange failed; disconnecting')
      await this.#network?.hangUp(peerId).catch(() => {})
      return
    }
    try {
      if (this.#revoked.has(peerId.toString())) throw new RevokedPeerError(`the fleet revoked ${peerId.toString()}`)
      this.#markVerified(peerId, remote, await verifyNodeCertificate(remote, this.fleetPublicKey, peerId.toString()), true)
    } catch (err: any) {
      await this.#deny(peerId, err.message)
    }
  }

  readonly #answer = async (stream: Stream, conn: Connection): Promise<void> => {
    const peerId = conn.remotePeer
    let claims: NodeClaims | undefined
    let offered = ''
    let refusal: string | undefined
    try {
      await answerCertificate(stream, this.#certificate, async cert => {
        try {
          if (this.#revoked.has(peerId.toString())) throw new RevokedPeerError(`the fleet revoked ${peerId.toString()}`)
          offered = cert
          claims = await verifyNodeCertificate(cert, this.fleetPublicKey, peerId.toString())
        } catch (err: any) {
          refusal = err.message
          throw err
        }
      }, { timeoutMs: this.#certTimeoutMs })
    } catch (err: any) {
      if (refusal != null) await this.#deny(peerId, refusal)
      else this.#c.logger.debug({ peer: peerId.toString(), err: err.message }, 'certificate exchange aborted')
      return
    }
    if (claims != null) this.#markVerified(peerId, offered, claims, false)
  }

  #requireNetwork (): TrustNetwork {
    if (this.#network == null) throw new Error('PeerTrust used before attach()')
    return this.#network
  }
}
