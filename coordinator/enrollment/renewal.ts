import { answerRenewal, CERT_RENEW_PROTOCOL } from '../../protocols/cert-renewal/index.ts'
import { issueNodeCertificate, verifyNodeCertificate } from '../../node/identity/certificate.ts'
import { ForbiddenError } from '../errors.ts'
import type { Fleet } from '../../node/identity/fleet.ts'
import type { Connection, Startable, Stream, StreamHandler } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface RenewalServiceComponents {
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
  }
  fleet: Pick<Fleet, 'privateKey' | 'publicKey' | 'fleetId'>
  /** The fleet revoked this peer (the registry's `revoked/<peerId>`). */
  isRevoked(peerId: string): boolean
  logger: Logger
  /** Seconds since epoch. @default now */
  now?: () => number
}

/** Longest lifetime a renewed certificate gets, whatever the old one had. */
const MAX_VALID_DAYS = 3650

/**
 * The coordinator's side of certificate renewal: a connected node hands
 * in its current certificate and gets a fresh one for the same peer id,
 * role and labels, valid as long as the old one was. Refused when the
 * certificate is not this fleet's, names another peer than the connection
 * proved, has expired, or the fleet revoked the peer.
 */
export class RenewalService implements Startable {
  readonly #c: RenewalServiceComponents

  constructor (components: RenewalServiceComponents) {
    this.#c = components
  }

  async start (): Promise<void> {
    await this.#c.network.handle(CERT_RENEW_PROTOCOL, this.#answer, { maxInboundStreams: 4 })
  }

  async stop (): Promise<void> {
    await this.#c.network.unhandle(CERT_RENEW_PROTOCOL)
  }

  /** A fresh certificate for `peerId`, from its current one. Throws ForbiddenError (or a trust error) to refuse. */
  async issueFor (peerId: string, current: string): Promise<string> {
    if (this.#c.isRevoked(peerId)) throw new ForbiddenError(`the fleet revoked ${peerId}: it cannot renew its certificate`)
    const now = this.#c.now?.() ?? Math.floor(Date.now() / 1000)
    const claims = await verifyNodeCertificate(current, this.#c.fleet.publicKey, peerId)
    const validDays = Math.min(MAX_VALID_DAYS, Math.max(1 / 24, (claims.exp - claims.iat) / 86400))
    return await issueNodeCertificate(this.#c.fleet.privateKey, { peerId, role: claims.role, labels: claims.labels, fleetId: this.#c.fleet.fleetId, validDays, now })
  }

  readonly #answer = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    try {
      await answerRenewal(stream, async current => {
        try {
          const cert = await this.issueFor(peer, current)
          this.#c.logger.info({ peer }, 'node certificate renewed')
          return cert
        } catch (err: any) {
          this.#c.logger.warn({ peer, err: err.message }, 'certificate renewal refused')
          throw err
        }
      })
    } catch (err: any) {
      this.#c.logger.debug({ peer, err: err.message }, 'certificate renewal exchange failed')
    }
  }
}
