import { rename, writeFile } from 'node:fs/promises'
import { CERT_RENEW_PROTOCOL, requestRenewal } from '../../protocols/cert-renewal/index.ts'
import { RenewalError } from './errors.ts'
import type { NodeClaims } from '../identity/certificate.ts'
import type { PeerTrust } from './peer-trust.ts'
import type { PeerId, Startable, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'

export const DEFAULT_RENEW_AFTER_FRACTION = 0.7
export const DEFAULT_RENEW_CHECK_INTERVAL_MS = 3_600_000
/** First retry after a failed renewal; doubles up to the check interval. */
const FIRST_RETRY_MS = 30_000

export interface RenewalComponents {
  peerId: PeerId
  trust: Pick<PeerTrust, 'certificate' | 'setCertificate' | 'claimsFor' | 'verifiedPeers'>
  network: { dialProtocol(peer: PeerId, protocol: string, options?: { signal?: AbortSignal }): Promise<Stream> }
  /** Keep the new certificate for the next start (the node directory's `node.cert`). */
  save(cert: string): Promise<void>
  /** Tell peers (the node record carries the certificate). */
  announce(): Promise<void>
  logger: Logger
}

export interface RenewalInit {
  /** Renew once this fraction of the certificate's lifetime has passed. @default DEFAULT_RENEW_AFTER_FRACTION */
  renewAfterFraction?: number
  /** Look at the certificate this often. @default DEFAULT_RENEW_CHECK_INTERVAL_MS */
  checkIntervalMs?: number
  /** @default Date.now */
  now?: () => number
}

/** Makes a fresh certificate from the current one: a coordinator over the mesh, or the coordinator's own fleet key. */
export type CertificateIssuer = (current: string) => Promise<string>

/**
 * Renews this node's certificate before it expires. Once the configured
 * fraction of its lifetime has passed, it asks a connected coordinator
 * (a peer whose certificate says `coordinator`) for a fresh one over
 * `/gatemesh/cert-renew/1.0.0`, and on success presents it on every new
 * connection, stores it in the node directory and re-announces its node
 * record so peers learn it. A failure is retried with backoff and warned
 * about; a node the fleet revoked is refused by every coordinator, and a
 * certificate that expired cannot be renewed (the node re-enrolls).
 */
export class CertificateRenewal implements Startable {
  readonly #c: RenewalComponents
  readonly #fraction: number
  readonly #checkMs: number
  readonly #now: () => number
  #issuer?: CertificateIssuer
  #timer?: NodeJS.Timeout
  #failures = 0
  #stopped = false
  #running?: Promise<NodeClaims | undefined>

  constructor (components: RenewalComponents, init: RenewalInit = {}) {
    this.#c = components
    this.#fraction = init.renewAfterFraction ?? DEFAULT_RENEW_AFTER_FRACTION
    this.#checkMs = init.checkIntervalMs ?? DEFAULT_RENEW_CHECK_INTERVAL_MS
    this.#now = init.now ?? Date.now
  }

  /** Issue locally instead of asking a coordinator (the coordinator's own agent holds the fleet key). */
  useIssuer (issuer: CertificateIssuer): void {
    this.#issuer = issuer
  }

  async start (): Promise<void> {
    this.#stopped = false
    this.#schedule(Math.min(this.#checkMs, 5_000))
  }

  async stop (): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#timer)
    this.#timer = undefined
    await this.#running?.catch(() => {})
  }

  /** When the current certificate is due for renewal (ms since epoch). */
  dueAt (): number {
    const claims = this.#claims()
    return (claims.iat + this.#fraction * (claims.exp - claims.iat)) * 1000
  }

  /** Renew if due; resolves to the new claims, or undefined when nothing was due. */
  async check (): Promise<NodeClaims | undefined> {
    if (this.#now() < this.dueAt()) return undefined
    return await this.renew()
  }

  /** Renew now, whatever the certificate's age. */
  async renew (): Promise<NodeClaims> {
    const current = this.#c.trust.certificate
    const cert = await this.#obtain(current)
    const claims = await this.#c.trust.setCertificate(cert)
    await this.#c.save(cert)
    await this.#c.announce().catch(err => { this.#c.logger.warn({ err: err.message }, 'announcing the renewed certificate failed') })
    this.#c.logger.info({ expires: new Date(claims.exp * 1000).toISOString() }, 'node certificate renewed')
    return claims
  }

  async #obtain (current: string): Promise<string> {
    if (this.#issuer != null) return await this.#issuer(current)
    const coordinators = this.#c.trust.verifiedPeers().filter(p => this.#c.trust.claimsFor(p.toString())?.role === 'coordinator')
    if (coordinators.length === 0) throw new RenewalError('no coordinator is connected to renew the certificate')
    let last: unknown
    for (const peer of coordinators) {
      try {
        const stream = await this.#c.network.dialProtocol(peer, CERT_RENEW_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
        return await requestRenewal(stream, current)
      } catch (err) {
        last = err
      }
    }
    throw new RenewalError(`every coordinator refused or failed: ${String((last as Error)?.message ?? last)}`, { cause: last })
  }

  #claims (): NodeClaims {
    const claims = this.#c.trust.claimsFor(this.#c.peerId.toString())
    if (claims == null) throw new RenewalError('this node holds no valid certificate (expired?): enroll it again')
    return claims
  }

  #schedule (ms: number): void {
    clearTimeout(this.#timer)
    if (this.#stopped) return
    this.#timer = setTimeout(() => {
      this.#running = this.check()
      this.#running.then(() => {
        this.#failures = 0
        this.#schedule(this.#checkMs)
      }, (err: Error) => {
        this.#failures++
        const retryMs = Math.min(this.#checkMs, FIRST_RETRY_MS * 2 ** (this.#failures - 1))
        let expires: string | undefined
        try {
          expires = new Date(this.#claims().exp * 1000).toISOString()
        } catch {}
        this.#c.logger.warn({ err: err.message, expires, retryInSec: Math.round(retryMs / 1000) }, 'node certificate renewal failed')
        this.#schedule(retryMs)
      })
    }, ms)
    this.#timer.unref()
  }
}

/** Replace a certificate file in one step: a crash leaves the old one or the new one, never half. */
export async function writeCertificateFile (path: string, cert: string): Promise<void> {
  await writeFile(`${path}.tmp`, `${cert}\n`, { mode: 0o644 })
  await rename(`${path}.tmp`, path)
}
