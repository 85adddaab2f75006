import { peerIdFromString } from '@libp2p/peer-id'
import { answerRelay, DEFAULT_RELAY_TIMEOUT_MS, RELAY_PROTOCOL, requestRelay } from '../../protocols/registry-relay/index.ts'
import { NotRelayedError } from './errors.ts'
import type { Registry } from './registry.ts'
import type { MeshNetwork } from '../mesh/network.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Connection, Startable, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface HealthRelayComponents {
  self: string
  network: Pick<MeshNetwork, 'handle' | 'unhandle' | 'dialProtocol'>
  registry: Pick<Registry, 'routeRelayed' | 'relayed'>
  /** this node's zone's scheduler as this node sees it (undefined: none) */
  leader: () => string | undefined
  /** whether this node is its zone's scheduler right now */
  isLeader: () => boolean
  logger: Logger
}

export interface HealthRelayInit {
  /** How long a member waits for its scheduler's answer before gossiping the entry itself. @default DEFAULT_RELAY_TIMEOUT_MS */
  timeoutMs?: number
  /** Streams one scheduler answers at once. @default 32 */
  maxInboundStreams?: number
}

/**
 * Health through the zone's scheduler (`protocols/registry-relay`). As a
 * member: this node's own `health/<self>` goes to its zone's scheduler,
 * which sends it to the zone with its next lease renewal; when there is
 * no scheduler, this node is it, or it refuses or does not answer in
 * time, the registry gossips the entry as before. As the scheduler: what
 * members hand it is checked as gossip is and queued for its next write to
 * the zone. A zone of Z members then gossips about one delta a second,
 * not Z / 60 + 1.
 */
export class HealthRelay implements Startable {
  readonly #c: HealthRelayComponents
  readonly #timeoutMs: number
  readonly #maxInboundStreams: number
  #started = false

  constructor (components: HealthRelayComponents, init: HealthRelayInit = {}) {
    this.#c = components
    this.#timeoutMs = init.timeoutMs ?? DEFAULT_RELAY_TIMEOUT_MS
    this.#maxInboundStreams = init.maxInboundStreams ?? 32
  }

  async start (): Promise<void> {
    await this.#c.network.handle(RELAY_PROTOCOL, this.#answer, { maxInboundStreams: this.#maxInboundStreams })
    this.#c.registry.routeRelayed(this.#send)
    this.#started = true
  }

  async stop (): Promise<void> {
    if (!this.#started) return
    this.#started = false
    this.#c.registry.routeRelayed(undefined)
    await this.#c.network.unhandle(RELAY_PROTOCOL)
  }

  /** Member side: true when our scheduler took the entry. */
  readonly #send = async (entry: WireEntry): Promise<boolean> => {
    const leader = this.#c.leader()
    if (!this.#started || leader == null || leader === this.#c.self) return false
    try {
      const signal = AbortSignal.timeout(this.#timeoutMs)
      const stream = await this.#c.network.dialProtocol(peerIdFromString(leader), RELAY_PROTOCOL, { signal })
      await requestRelay(stream, [entry], { timeoutMs: this.#timeoutMs, signal })
      return true
    } catch (err: any) {
      this.#c.logger.debug({ scheduler: leader, key: entry.k, err: err.message }, 'the scheduler did not take our health: gossiping it')
      return false
    }
  }

  /** Scheduler side. */
  readonly #answer = async (stream: Stream, connection: Connection): Promise<void> => {
    const from = connection.remotePeer.toString()
    try {
      await answerRelay(stream, async entries => {
        if (!this.#c.isLeader()) throw new NotRelayedError('this node is not its zone\'s scheduler')
        await this.#c.registry.relayed(entries, from)
      }, { timeoutMs: this.#timeoutMs })
    } catch (err: any) {
      this.#c.logger.debug({ peer: from, err: err.message }, 'answering a relay request failed')
    }
  }
}
