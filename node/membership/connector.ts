import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { CERT_PROTOCOL } from '../../protocols/cert-exchange/index.ts'
import { zoneOf } from '../../protocols/registry/zones.ts'
import { SWIM_PROTOCOL } from '../../protocols/swim/wire.ts'
import type { Member } from './membership.ts'
import type { Connection, PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

const REDIALS_PER_TICK = 2
/** A connection this node dialled for one errand (a survey probe, an anti-entropy round, an indirect probe) is closed once this old and idle. */
const ERRAND_MS = 30_000
/** Streams every connection carries for as long as it is open: they do not make it busy. */
const STANDING_PROTOCOLS = new Set([SWIM_PROTOCOL, CERT_PROTOCOL, '/meshsub/1.0.0', '/meshsub/1.1.0', '/meshsub/1.2.0', '/ipfs/id/1.0.0', '/ipfs/id/push/1.0.0', '/ipfs/ping/1.0.0'])

export interface ConnectorComponents {
  peerId: PeerId
  network: {
    dial(addr: Multiaddr | Multiaddr[], options?: { signal?: AbortSignal }): Promise<Connection>
    getConnections(peer?: PeerId): Connection[]
  }
  members(): readonly Member[]
  /** this node's zone's scheduler (undefined: none known): its connection is kept, as members hand it their health */
  scheduler?: () => string | undefined
  /** the members membership probes and is probed by (its ring neighbours): their connections are kept */
  neighbours?: () => ReadonlySet<string>
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
  /** the peers this connector dialled to keep (bootstrap, target, zone, scheduler) */
  readonly #kept = new Set<string>()
  /** when a connection last carried more than the standing streams, by peer */
  readonly #busyAt = new Map<string, number>()
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
    // one pass over the members, cheap checks only: at N = 5000 this ran every 2 s over every
    // member several times, reading each one's addresses (a live accessor)
    const zone = this.#zone()
    const scheduler = this.#c.scheduler?.()
    const alive: Member[] = []
    const dead: Member[] = []
    let zoneConnected = 0
    for (const m of this.#c.members()) {
      if (m.self) continue
      if (connected.has(m.peerId)) {
        if (zoneOf(m.labels) === zone) zoneConnected++
        continue
      }
      if (this.#dialing.has(m.peerId)) continue
      if (m.state === 'alive') alive.push(m)
      else if (m.state === 'dead') dead.push(m)
    }
    // the zone's scheduler, whom this node hands its health (node/registry/relay.ts)
    if (scheduler != null && scheduler !== this.#c.peerId.toString() && !connected.has(scheduler)) {
      const m = alive.find(m => m.peerId === scheduler)
      if (m != null) this.#dialMember(m)
    }
    // the zone's own members first: zone-local gossip travels only between them
    let wanted = this.#zonePeers - zoneConnected
    if (wanted > 0) {
      for (const m of randomOrder(alive)) {
        if (wanted <= 0) break
        if (zoneOf(m.labels) === zone && !this.#dialing.has(m.peerId) && this.#dialMember(m)) wanted--
      }
    }
    let missing = this.#target - connected.size - this.#dialing.size
    if (missing > 0) {
      for (const m of randomOrder(alive)) {
        if (missing <= 0) break
        if (!this.#dialing.has(m.peerId) && this.#dialMember(m)) missing--
      }
    }
    // lost members (dead, or across a partition): a couple per tick, with
    // backoff, is enough — one healed link lets gossip and sync flow again
    const now = Date.now()
    const due = dead.filter(m => (this.#backoff.get(m.peerId)?.next ?? 0) <= now)
    let redials = 0
    for (const m of randomOrder(due)) {
      if (redials >= REDIALS_PER_TICK) break
      if (m.addresses.length === 0) continue
      const b = this.#backoff.get(m.peerId)
      const delay = Math.min(this.#maxRedialMs, b == null ? this.#minRedialMs : b.delay * 2)
      this.#backoff.set(m.peerId, { delay, next: now + delay })
      if (this.#dialMember(m)) redials++
    }
    for (const id of connected) this.#backoff.delete(id)
    this.#closeErrands(connected, scheduler)
  }

  /**
   * Close the connections this node dialled for one errand and no longer
   * needs: outbound, older than ERRAND_MS, carrying nothing but the streams
   * every connection has, to a peer that is not one this connector keeps,
   * not a ring neighbour and not the zone's scheduler; never below the
   * target. Nothing else closes them (libp2p's pruner leaves a connection
   * with a gossipsub stream open, and `maxConnections` is sized for a
   * scheduler's whole zone), so over minutes a real agent ended up
   * connected to nearly every member (34–37 of 39 at 40 agents). The side
   * that dialled decides; the other side never closes what it did not dial.
   */
  #closeErrands (connected: Set<string>, scheduler: string | undefined): void {
    for (const id of this.#kept) if (!connected.has(id) && !this.#dialing.has(id)) this.#kept.delete(id)
    for (const id of this.#busyAt.keys()) if (!connected.has(id)) this.#busyAt.delete(id)
    let spare = connected.size - this.#target
    const neighbours = this.#c.neighbours?.() ?? new Set<string>()
    /** peers whose connection is being closed: each counts once against `spare` */
    const charged = new Set<string>()
    const now = Date.now()
    for (const conn of this.#c.network.getConnections()) {
      const id = conn.remotePeer.toString()
      // busy now (a bundle transfer, a forwarded prediction), or busy within ERRAND_MS: a
      // connection in steady use between requests is not an errand
      if (conn.streams.some(st => st.protocol != null && !STANDING_PROTOCOLS.has(st.protocol))) {
        this.#busyAt.set(id, now)
        continue
      }
      // a peer being closed loses all its errand connections; another peer only while above the target
      if (spare <= 0 && !charged.has(id)) continue
      if (conn.direction !== 'outbound' || conn.status !== 'open' || now - conn.timeline.open < ERRAND_MS) continue
      if (this.#kept.has(id) || neighbours.has(id) || id === scheduler) continue
      if (now - (this.#busyAt.get(id) ?? -Infinity) < ERRAND_MS) continue
      this.#busyAt.delete(id)
      if (!charged.has(id)) {
        charged.add(id)
        spare--
      }
      conn.close().catch(err => { conn.abort(err) })
    }
  }

  /** Dial a member at the addresses it announced; false when it has none we can use. */
  #dialMember (m: Member): boolean {
    let addrs: Multiaddr[]
    try {
      addrs = m.addresses.map(a => multiaddr(a))
    } catch {
      return false
    }
    if (addrs.length === 0) return false
    this.#dial(m.peerId, addrs)
    return true
  }

  #dial (id: string, addrs: Multiaddr[]): void {
    if (this.#dialing.has(id)) return
    this.#dialing.add(id)
    this.#kept.add(id)
    this.#c.network.dial(addrs, { signal: AbortSignal.timeout(this.#dialTimeoutMs) })
      .catch(err => { this.#c.logger.debug({ peer: id, err: err.message }, 'dial failed') })
      .finally(() => { this.#dialing.delete(id) })
  }
}

/**
 * `list` in a random order, shuffled as far as it is read (Fisher–Yates, one
 * step per item taken): a tick that needs two members of 5000 shuffles two.
 */
function * randomOrder<T> (list: T[]): Generator<T> {
  for (let i = 0; i < list.length; i++) {
    const j = i + Math.floor(Math.random() * (list.length - i))
    ;[list[i], list[j]] = [list[j]!, list[i]!]
    yield list[i]!
  }
}
