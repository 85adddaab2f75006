import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import pino from 'pino'
import { createServer, type AddressInfo } from 'node:net'
import { createMesh, type Mesh } from '../../../node/mesh/libp2p.ts'
import { PeerTrust } from '../../../node/trust/peer-trust.ts'
import { VERSION } from '../../../node/version.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../../protocols/registry/delta.ts'
import { isZoneLocal, zoneTopic } from '../../../protocols/registry/zones.ts'
import { answerSync, SYNC_PROTOCOL, syncWith, type SyncReplica } from '../../../protocols/registry-sync/index.ts'
import { answerPushPull, pushPull, SWIM_SYNC_PROTOCOL } from '../../../protocols/swim-sync/index.ts'
import { answerRelay, isRelayed, RELAY_PROTOCOL } from '../../../protocols/registry-relay/index.ts'
import { SwimLink } from '../../../protocols/swim/link.ts'
import { relayedAckBytes, SWIM_PROTOCOL, type Gossip, type MemberRecord, type Reply, type Request } from '../../../protocols/swim/wire.ts'
import type { FleetState, Member } from './fleet.ts'
import type { Message } from '@libp2p/gossipsub'
import type { Connection, PeerId, Stream } from '@libp2p/interface'

const silent = pino({ level: 'silent' })

/** What a simulated member talks to: the one agent under test. */
export interface AgentTarget {
  id: string
  addr: string
}

/**
 * One simulated fleet member while the agent talks to it: a real libp2p
 * node built by the agent's own `createMesh` (TCP, the fleet's private
 * network, Noise, Yamux, identify, ping, gossipsub on the registry topic)
 * with the agent's own `PeerTrust` (certificate exchange, gater), answering
 * SWIM probes, indirect probes, push-pull and registry anti-entropy from
 * the fleet state every member shares. Its address is the member's proxy
 * port (announced, so identify tells the agent that one). The agent's
 * zone's scheduler also takes the agent's own health as a real scheduler
 * would (protocols/registry-relay); the other members do not speak that
 * protocol, so an agent asking one of them falls back to gossip.
 */
export class SimNode {
  readonly member: Member
  readonly mesh: Mesh
  readonly trust: PeerTrust
  readonly #fleet: FleetState
  readonly #agent: AgentTarget
  readonly #agentPeer: PeerId
  #link?: SwimLink
  #linkOpening?: Promise<SwimLink>
  /** performance.now() of the last thing it did */
  usedAt = performance.now()
  readonly core: boolean
  readonly #port: number
  readonly #onRelay?: (accepted: boolean) => void

  private constructor (member: Member, fleet: FleetState, agent: AgentTarget, mesh: Mesh, trust: PeerTrust, core: boolean, port: number, onRelay?: (accepted: boolean) => void) {
    this.#port = port
    this.#onRelay = onRelay
    this.member = member
    this.#fleet = fleet
    this.#agent = agent
    this.#agentPeer = peerIdFromString(agent.id)
    this.mesh = mesh
    this.trust = trust
    this.core = core
  }

  /** `onRelay`: told of each relay request of the agent this node (its zone's scheduler) accepted or refused. */
  static async start (member: Member, fleet: FleetState, agent: AgentTarget, core: boolean, onRelay?: (accepted: boolean) => void): Promise<SimNode> {
    const peerId = peerIdFromString(member.id)
    for (let attempt = 1; ; attempt++) {
      const trust = new PeerTrust({ peerId, logger: silent }, { fleetPublicKey: fleet.fleetPublicKey, certificate: member.cert })
      // a port of its own behind the proxy; the announced address (what identify tells) is the proxy's
      const port = await kernelPort()
      const mesh = await createMesh({
        privateKey: member.privateKey,
        networkKey: fleet.networkKey,
        listen: [`/ip4/127.0.0.1/tcp/${port}`],
        announce: [`/ip4/127.0.0.1/tcp/${member.port}`],
        gater: trust.gater(),
        version: VERSION
      })
      trust.attach(mesh)
      const node = new SimNode(member, fleet, agent, mesh, trust, core, port, onRelay)
      await trust.learnCertificate(member.cert, member.id)
      await trust.start()
      try {
        await mesh.start()
      } catch (err) {
        await trust.stop().catch(() => {})
        await Promise.resolve(mesh.stop()).catch(() => {})
        // the kernel can hand the port out again (a connection's source port) before libp2p binds it
        if (attempt < 5 && /EADDRINUSE/.test(`${String((err as Error).message)} ${String(((err as Error).cause as Error | undefined)?.message)}`)) continue
        throw err
      }
      await node.#handle()
      return node
    }
  }

  /** The TCP port libp2p really listens on (behind the member's proxy port). */
  get port (): number {
    return this.#port
  }

  connected (): boolean {
    return this.mesh.getConnections(this.#agentPeer).some(c => c.status === 'open')
  }

  /** The agent is in this node's gossipsub mesh for `topic`: it forwards deltas of that topic to it. */
  meshesAgent (topic: string): boolean {
    // the implementation's mesh, which the service's interface type leaves out
    const pubsub = this.mesh.services.pubsub as unknown as { getMeshPeers(topic: string): string[] }
    return pubsub.getMeshPeers(topic).includes(this.#agent.id)
  }

  /**
   * Take a delta as had, the way a member outside the agent's gossipsub mesh
   * has every delta from its own mesh: the agent's IHAVE then asks it for
   * nothing. (A member that never had the fleet's deltas answered every
   * IHAVE with an IWANT, and the agent sent it whole copies no real member
   * asks for: bytes out 1.65× the real mesh's.) `msgId`: the delta's
   * `contentMessageId`, as every member's gossipsub computes it.
   */
  markSeen (msgId: Uint8Array): void {
    // gossipsub's seen cache, which its interface type leaves out
    const pubsub = this.mesh.services.pubsub as unknown as { seenCache: { put(id: string): void }, msgIdToStrFn: (id: Uint8Array) => string }
    pubsub.seenCache.put(pubsub.msgIdToStrFn(msgId))
  }

  /** A member of the agent's zone: it follows the zone's topic and exchanges the zone's health and instances with it. */
  get zoneMate (): boolean {
    return this.#fleet.inAgentZone(this.member)
  }

  /** The agent's zone's scheduler (its first member): it relays the zone's health with its renewals. */
  get zoneScheduler (): boolean {
    return this.zoneMate && this.#fleet.members[this.member.scheduler]?.id === this.member.id
  }

  async stop (): Promise<void> {
    this.#link?.close()
    try {
      await this.trust.stop()
    } catch {}
    try {
      await this.mesh.stop()
    } catch {}
  }

  async #handle (): Promise<void> {
    const { mesh, trust } = this
    const pubsub = mesh.services.pubsub
    // the fleet topic, and the zone's topic for the agent's zone mates (as their registries follow their zone)
    const topics = [REGISTRY_TOPIC, ...(this.zoneMate ? [zoneTopic(this.#fleet.agentZone)] : [])]
    for (const topic of topics) pubsub.subscribe(topic)
    pubsub.addEventListener('message', (evt: CustomEvent<Message>) => {
      if (!topics.includes(evt.detail.topic)) return
      try {
        for (const e of deltaCodec.decode(evt.detail.data).entries) this.#fleet.put(e)
      } catch {}
    })
    await mesh.handle(SWIM_PROTOCOL, (stream: Stream, conn: Connection) => {
      if (conn.remotePeer.toString() !== this.#agent.id) {
        stream.abort(new Error('simulated members only talk to the agent'))
        return
      }
      this.#adopt(stream)
    }, { maxInboundStreams: 4 })
    await mesh.handle(SWIM_SYNC_PROTOCOL, async (stream: Stream) => {
      this.usedAt = performance.now()
      try {
        const theirs = await answerPushPull(stream, () => this.#fleet.records())
        for (const r of theirs) this.#fleet.noteAgentRecord(r, this.#agent.id)
      } catch {}
    }, { maxInboundStreams: 2 })
    await mesh.handle(SYNC_PROTOCOL, async (stream: Stream) => {
      this.usedAt = performance.now()
      await answerSync(stream, this.#replica()).catch(() => {})
    }, { maxInboundStreams: 2 })
    // the agent hands its health to its zone's scheduler, which sends it on with its next renewal. It is kept
    // in the fleet state (as received gossip is) but not put in the renewals the generators publish: those
    // are signed alike by every generator process, and only this one heard from the agent
    if (this.zoneScheduler) {
      await mesh.handle(RELAY_PROTOCOL, async (stream: Stream, conn: Connection) => {
        this.usedAt = performance.now()
        const from = conn.remotePeer.toString()
        await answerRelay(stream, async entries => {
          const refuse = (msg: string): never => {
            this.#onRelay?.(false)
            throw Object.assign(new Error(msg), { code: 'ERR_NOT_RELAYED' })
          }
          if (from !== this.#agent.id) refuse('simulated members only relay for the agent')
          for (const e of entries) {
            if (e.w !== from) refuse(`${e.k}: a member relays only its own entries`)
            if (!isRelayed(e.k)) refuse(`${e.k}: only health is relayed`)
          }
          for (const e of entries) this.#fleet.put(e)
          this.#onRelay?.(true)
        }).catch(() => {})
      }, { maxInboundStreams: 2 })
    }
    // as every agent does: a peer we dialled and verified is synced with at once
    trust.addEventListener('peer:verified', evt => {
      if (evt.detail.outbound && evt.detail.peerId.toString() === this.#agent.id) this.sync().catch(() => {})
    })
  }

  /** The fleet's replica as this member exchanges it with the agent: zone-local entries only between zone mates. */
  #replica (): SyncReplica {
    const fleet = this.#fleet
    const mate = this.zoneMate
    return {
      entries: () => mate ? fleet.entries.values() : [...fleet.entries.values()].filter(e => !isZoneLocal(e.k)),
      merge: async entries => { for (const e of entries) if (mate || !isZoneLocal(e.k)) fleet.put(e) }
    }
  }

  #adopt (stream: Stream): SwimLink {
    const link = new SwimLink(stream, {
      onRequest: async frame => await this.#answer(frame),
      onGossip: frame => { this.#onGossip(frame) }
    })
    if (this.#link == null || this.#link.closed) this.#link = link
    return link
  }

  async #answer (frame: Request): Promise<Reply | undefined> {
    this.usedAt = performance.now()
    const fleet = this.#fleet
    this.#absorb(frame.g)
    const self = fleet.alive.get(this.member.id)!
    if (frame.t === 'ping') {
      const ack: Reply = { t: 'ack', re: frame.seq, now: Date.now() }
      if (frame.inc == null || frame.inc < self.inc) ack.g = [self]
      if (frame.for != null) ack.sig = await sign(this.member, relayedAckBytes(frame.for.id, frame.for.n, this.member.id))
      return ack
    }
    // an indirect probe: every simulated member is up, so the target's ack (signed with its key) comes back
    const target = fleet.byId.get(frame.id)
    if (target == null) return { t: 'nack', re: frame.seq }
    return { t: 'ack', re: frame.seq, now: Date.now(), sig: await sign(target, relayedAckBytes(this.#agent.id, frame.n, target.id)) }
  }

  #onGossip (frame: Gossip): void {
    this.usedAt = performance.now()
    this.#absorb(frame.g)
  }

  /** Keep the agent's claims; refute any accusation of a simulated member, as the member itself would. */
  #absorb (records: MemberRecord[] | undefined): void {
    for (const r of records ?? []) {
      if (r.id === this.#agent.id) {
        this.#fleet.noteAgentRecord(r, this.#agent.id)
        continue
      }
      const m = this.#fleet.byId.get(r.id)
      const held = this.#fleet.alive.get(r.id)
      if (m == null || held == null || r.acc == null || r.inc < held.inc) continue
      void this.#fleet.aliveAt(m, r.inc + 1).then(async refuted => { await this.gossip([refuted]) }).catch(() => {})
    }
  }

  async #linkToAgent (): Promise<SwimLink> {
    if (this.#link != null && !this.#link.closed) return this.#link
    this.#linkOpening ??= (async () => {
      const conn = await this.#connection()
      return this.#adopt(await conn.newStream(SWIM_PROTOCOL, { signal: AbortSignal.timeout(5000) }))
    })().finally(() => { this.#linkOpening = undefined })
    return await this.#linkOpening
  }

  async #connection (): Promise<Connection> {
    const open = this.mesh.getConnections(this.#agentPeer).find(c => c.status === 'open')
    const conn = open ?? await this.mesh.dial(multiaddr(this.#agent.addr), { signal: AbortSignal.timeout(5000) })
    if (!this.trust.isVerified(this.#agent.id)) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { off(); reject(new Error('agent did not verify in time')) }, 5000)
        const on = (evt: CustomEvent<{ peerId: PeerId }>): void => { if (evt.detail.peerId.toString() === this.#agent.id) { off(); resolve() } }
        const off = (): void => { clearTimeout(timer); this.trust.removeEventListener('peer:verified', on) }
        this.trust.addEventListener('peer:verified', on)
        if (this.trust.isVerified(this.#agent.id)) { off(); resolve() }
      })
    }
    return conn
  }

  /** Connect to the agent (as a member's connector would) without asking anything yet. */
  async connect (): Promise<void> {
    this.usedAt = performance.now()
    await this.#connection()
  }

  /** One SWIM probe of the agent, as a member's prober sends it. */
  async probe (timeoutMs = 500): Promise<boolean> {
    this.usedAt = performance.now()
    const link = await this.#linkToAgent()
    const inc = this.#fleet.agentRecord?.inc
    const reply = await link.request(inc == null ? { t: 'ping' } : { t: 'ping', inc }, timeoutMs)
    if (reply.t === 'ack') this.#absorb(reply.g)
    return reply.t === 'ack'
  }

  async gossip (records: MemberRecord[]): Promise<void> {
    const link = await this.#linkToAgent()
    await link.send({ t: 'gossip', g: records })
  }

  async pushPull (): Promise<void> {
    this.usedAt = performance.now()
    const conn = await this.#connection()
    const stream = await conn.newStream(SWIM_SYNC_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const theirs = await pushPull(stream, this.#fleet.records(), { timeoutMs: 10_000 })
    for (const r of theirs) this.#fleet.noteAgentRecord(r, this.#agent.id)
  }

  async sync (): Promise<void> {
    this.usedAt = performance.now()
    const conn = await this.#connection()
    const stream = await conn.newStream(SYNC_PROTOCOL, { signal: AbortSignal.timeout(30_000) })
    await syncWith(stream, this.#replica())
  }

  /** Pass a delta on as a member that received it from the fleet would; false when it had it already. */
  async publish (topic: string, data: Uint8Array): Promise<boolean> {
    this.usedAt = performance.now()
    try {
      await this.mesh.services.pubsub.publish(topic, data)
      return true
    } catch {
      return false
    }
  }
}

async function sign (m: Member, bytes: Uint8Array): Promise<string> {
  return Buffer.from(await m.privateKey.sign(bytes)).toString('base64url')
}

/**
 * A port the kernel picks (its ephemeral range): never one from the range
 * tests and benchmarks reserve through test/helpers/ports.ts, which this
 * bench, starting and stopping thousands of nodes, would take from under a
 * test running beside it (seen: a test's rogue peer died at start).
 */
async function kernelPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address() as AddressInfo
  await new Promise(resolve => { server.close(resolve) })
  return port
}
