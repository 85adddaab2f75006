import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { zoneOf } from '../../protocols/registry/zones.ts'
import type { Member } from './membership.ts'
import type { Connection, PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

const REDIALS_PER_TICK = 2

export interface ConnectorComponents {
  peerId: PeerId
  network: {
    dial(addr: Multiaddr | Multiaddr[], options?: { signal?: AbortSignal }): Promise<Connection>
    getConnections(peer?: PeerId): Connection[]
  }
  members(): Member[]
  /** this node's zone's scheduler (undefined: none known): its connection is kept, as members hand it their health */
  scheduler?: () => string | undefined
  logger: Logger
}

export interface ConnectorInit {
  /** Keep at least this many peers connected. @default 6 */
  targetPeers?: number
  /** Of those, at least this many (as far as there are) in this node's zone: its zone's gossip and anti-entropy go through them. @default 3 */
  zonePeers?: number
  /** This node's zone (its certificate's). @default one default zone */
  zone?: () => string
  /** Bootstrap multiaddrs, redialled whenever we have no connection at all. */
  bootstrap?: string[]
  /** @default 2000 */
  intervalMs?: number
  /** @default 3000 */
  dialTimeoutMs?: number
  /** First retry delay for members we cannot reach; doubles up to `maxRedialMs`. @default 2000 */
  minRedialMs?: number
  /** @default 60000 */
  maxRedialMs?: number
}

/**
 * Keeps the mesh connected: bootstrap only introduces a node to one peer,
 * so it dials live members it learns from the registry until it holds
 * `targetPeers` connections, and goes back to the bootstrap list whenever it
 * finds itself alone. It keeps a connection to its zone's scheduler (its
 * members hand it their health). Members it cannot hear from (dead, or across a
 * partition) are redialled with exponential backoff, which is how two
 * halves of a split mesh find each other again.
 */
export class Connector implements Startable {
  readonly #c: ConnectorComponents
  readonly #target: number
  readonly #zonePeers: number
  readonly #zone: () => string
  readonly #bootstrap: Multiaddr[]
  readonly #intervalMs: number
  readonly #dialTimeoutMs: number
  readonly #minRedialMs: number
  readonly #maxRedialMs: number
  readonly #dialing = new Set<string>()
  readonly #backoff = new Map<string, { delay: number, next: number }>()
  #timer?: NodeJS.Timeout

  constructor (components: ConnectorComponents, init: ConnectorInit = {}) {
    this.#c = components
    this.#target = init.targetPeers ?? 6
    this.#zonePeers = Math.min(init.zonePeers ?? 3, this.#target)
    this.#zone = init.zone ?? (() => zoneOf(undefined))
    this.#bootstrap = (init.bootstrap ?? []).map(a => multiaddr(a))
    this.#intervalMs = init.intervalMs ?? 2000
    this.#dialTimeoutMs = init.dialTimeoutMs ?? 3000
    this.#minRedialMs = init.minRedialMs ?? 2000
    this.#maxRedialMs = init.maxRedialMs ?? 60_000
  }

  async start (): Promise<void> {
    this.#timer = setInterval(() => { this.tick() }, this.#intervalMs)
    setTimeout(() => { this.tick() }, 200).unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
  }

  tick (): void {
    const connected = new Set(this.#c.network.getConnections().map(c => c.remotePeer.toString()))
    if (connected.size === 0) {
      for (const addr of this.#bootstrap) this.#dial(addr.getComponents().find(c => c.name === 'p2p')?.value ?? addr.toString(), [addr])
    }
    const all = this.#c.members()
    const members = all.filter(m => !m.self && m.addresses.length > 0 && !connected.has(m.peerId) && !this.#dialing.has(m.peerId))
    // the zone's scheduler, whom this node hands its health (node/registry/relay.ts)
    const scheduler = this.#c.scheduler?.()
    if (scheduler != null && scheduler !== this.#c.peerId.toString() && !connected.has(scheduler)) {
      const m = members.find(m => m.peerId === scheduler && m.state === 'alive')
      if (m != null) this.#dialMember(m)
    }
    // the zone's own members first: zone-local gossip travels only between them
    const zone = this.#zone()
    const alive = shuffle(members.filter(m => m.state === 'alive'))
    const inZone = alive.filter(m => zoneOf(m.labels) === zone)
    const zoneConnected = all.filter(m => !m.self && connected.has(m.peerId) && zoneOf(m.labels) === zone).length
    for (const m of inZone.slice(0, Math.max(0, this.#zonePeers - zoneConnected))) this.#dialMember(m)
    const missing = this.#target - connected.size - this.#dialing.size
    if (missing > 0) {
      for (const m of alive.filter(m => !this.#dialing.has(m.peerId)).slice(0, missing)) this.#dialMember(m)
    }
    // lost members (dead, or across a partition): a couple per tick, with
    // backoff, is enough — one healed link lets gossip and sync flow again
    const now = Date.now()
    const due = shuffle(members.filter(m => m.state === 'dead' && (this.#backoff.get(m.peerId)?.next ?? 0) <= now))
    for (const m of due.slice(0, REDIALS_PER_TICK)) {
      const b = this.#backoff.get(m.peerId)
      const delay = Math.min(this.#maxRedialMs, b == null ? this.#minRedialMs : b.delay * 2)
      this.#backoff.set(m.peerId, { delay, next: now + delay })
      this.#dialMember(m)
    }
    for (const id of connected) this.#backoff.delete(id)
  }

  #dialMember (m: Member): void {
    let addrs: Multiaddr[]
    try {
      addrs = m.addresses.map(a => multiaddr(a))
    } catch {
      return
    }
    this.#dial(m.peerId, addrs)
  }

  #dial (id: string, addrs: Multiaddr[]): void {
    if (this.#dialing.has(id)) return
    this.#dialing.add(id)
    this.#c.network.dial(addrs, { signal: AbortSignal.timeout(this.#dialTimeoutMs) })
      .catch(err => { this.#c.logger.debug({ peer: id, err: err.message }, 'dial failed') })
      .finally(() => { this.#dialing.delete(id) })
  }
}

function shuffle<T> (list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[list[i], list[j]] = [list[j]!, list[i]!]
  }
  return list
}
