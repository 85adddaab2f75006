import { peerIdFromString } from '@libp2p/peer-id'
import { revocationKey, type Revocation } from '../../protocols/registry/revocation.ts'
import { authorizeRegistryWrite } from '../../packaging/trust.ts'
import { BadRequestError } from '../errors.ts'
import type { Registry } from '../../node/registry/registry.ts'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'

export interface RevocationsComponents {
  registry: Pick<Registry, 'stampFor' | 'set' | 'value' | 'revocations'>
  /** the fleet key: only it may sign a revocation (publishers may not) */
  fleetKey: KeyObject
  /** this coordinator's own peer id: revoking it would cut the coordinator off */
  self: string
  logger: Logger
}

export type RevocationView = Revocation & { peerId: string }

/**
 * Revocation through the coordinator: it signs `revoked/<peerId>` with the
 * fleet key and writes it through its embedded agent. From there every
 * agent enforces it at once (hangs up, denies at the gater and in every
 * validator, drops what the peer wrote) and keeps it on disk; agents that
 * were offline learn it through anti-entropy. A revocation is permanent.
 */
export class Revocations {
  readonly #c: RevocationsComponents

  constructor (components: RevocationsComponents) {
    this.#c = components
  }

  list (): RevocationView[] {
    return this.#c.registry.revocations().sort((a, b) => b.revokedAt - a.revokedAt)
  }

  /** Revoke `peerId`; revoking a revoked peer again returns the first revocation. */
  async revoke (peerId: string, input: { reason?: string, by: string }): Promise<{ revocation: RevocationView, created: boolean }> {
    try {
      peerIdFromString(peerId)
    } catch (err) {
      throw new BadRequestError(`peerId: "${peerId}" is not a peer id`, { field: 'params.peerId', cause: err })
    }
    if (peerId === this.#c.self) throw new BadRequestError('peerId: this is the coordinator\'s own peer id; it cannot revoke itself', { field: 'params.peerId' })
    const key = revocationKey(peerId)
    const existing = this.#c.registry.value<Revocation>(key)
    if (existing != null) return { revocation: { peerId, ...existing }, created: false }
    const record: Revocation = { reason: input.reason ?? '', revokedAt: Date.now(), by: input.by }
    const { writer, ts } = this.#c.registry.stampFor(key)
    const auth = await authorizeRegistryWrite({ key, valueJson: JSON.stringify(record), writer, ts }, { key: this.#c.fleetKey })
    await this.#c.registry.set(key, record, { auth })
    this.#c.logger.warn({ peer: peerId, reason: record.reason, by: input.by }, 'node revoked')
    return { revocation: { peerId, ...record }, created: true }
  }
}
