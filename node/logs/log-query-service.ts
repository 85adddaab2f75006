import { answerLogs, LOG_QUERY_PROTOCOL } from '../../protocols/log-query/index.ts'
import type { LogStore } from './log-store.ts'
import type { NodeClaims } from '../identity/certificate.ts'
import type { Connection, Startable, Stream, StreamHandler } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface LogQueryComponents {
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
  }
  trust: {
    isVerified(peerId: string): boolean
    claimsFor(peerId: string): NodeClaims | undefined
  }
  store: Pick<LogStore, 'query'>
  logger: Logger
}

export interface LogQueryInit {
  /** Certificate roles whose holders may read this node's logs. @default ['coordinator'] */
  allowedRoles?: string[]
  /** @default 4 */
  maxInboundStreams?: number
}

/**
 * Answers mesh log queries over this agent's own log store. Logs can hold
 * what operators would rather not spread around, so only verified peers
 * whose fleet certificate carries an allowed role (the coordinator) get
 * answers; everyone else gets a refusal naming why.
 */
export class LogQueryService implements Startable {
  readonly #c: LogQueryComponents
  readonly #allowed: Set<string>
  readonly #maxInbound: number

  constructor (components: LogQueryComponents, init: LogQueryInit = {}) {
    this.#c = components
    this.#allowed = new Set(init.allowedRoles ?? ['coordinator'])
    this.#maxInbound = init.maxInboundStreams ?? 4
  }

  async start (): Promise<void> {
    await this.#c.network.handle(LOG_QUERY_PROTOCOL, this.#answer, { maxInboundStreams: this.#maxInbound })
  }

  async stop (): Promise<void> {
    await this.#c.network.unhandle(LOG_QUERY_PROTOCOL)
  }

  readonly #answer = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    const refuse = (): string | undefined => {
      const role = this.#c.trust.isVerified(peer) ? this.#c.trust.claimsFor(peer)?.role : undefined
      if (role != null && this.#allowed.has(role)) return undefined
      const reason = role == null ? 'no verified fleet certificate' : `role ${role} may not read logs`
      this.#c.logger.info({ peer, reason }, 'log query refused')
      return reason
    }
    try {
      const { sent } = await answerLogs(stream, (query, signal) => this.#c.store.query(query, signal), { refuse })
      this.#c.logger.debug({ peer, sent }, 'answered log query')
    } catch (err: any) {
      this.#c.logger.debug({ peer, err: err.message }, 'log query failed')
    }
  }
}
