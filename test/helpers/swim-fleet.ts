import { generateKeyPairSync } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { pino } from 'pino'
import { issueNodeCertificate, verifyNodeCertificate, type NodeClaims, type Role } from '../../node/identity/certificate.ts'
import { Membership, type MemberState, type MembershipInit, type MemberTrust } from '../../node/membership/membership.ts'
import { MemorySwimNetwork, type MemorySwimTransport } from './memory-swim.ts'
import type { ProbeResult } from '../../node/membership/prober.ts'
import type { TransportHandler } from '../../node/membership/transport.ts'
import type { PeerId, PrivateKey } from '@libp2p/interface'

/**
 * Fast timings for in-process tests: a probe every 200 ms. Every member
 * shares one event loop on a busy machine, so a late timer here is the
 * test's doing, not a stall worth reacting to.
 */
export const FAST: MembershipInit = {
  probeIntervalMs: 200,
  probeTimeoutMs: 100,
  gossipIntervalMs: 50,
  pushPullIntervalMs: 2000,
  stallThresholdMs: 5000
}

export interface SwimNode {
  name: string
  peerId: PeerId
  id: string
  privateKey: PrivateKey
  cert: string
  trust: MemberTrust & { claims: Map<string, NodeClaims>, denied: Set<string> }
  membership: Membership
  /** outcomes of this node's probes, in order */
  probes: ProbeResult[]
  /** codes of what this node refused */
  rejected: string[]
}

/**
 * Memberships of a fleet in one process over a simulated network, each
 * with the fleet's certificates already learnt (as the certificate
 * exchange and node records would teach them).
 */
export class SwimFleet {
  readonly net = new MemorySwimNetwork()
  readonly fleet = generateKeyPairSync('ed25519')
  readonly nodes: SwimNode[] = []

  async add (name: string, init: MembershipInit = FAST, options: { role?: Role, labels?: Record<string, string> } = {}): Promise<SwimNode> {
    const privateKey = await generateKeyPair('Ed25519')
    const peerId = peerIdFromPrivateKey(privateKey)
    const id = peerId.toString()
    const cert = await issueNodeCertificate(this.fleet.privateKey, { peerId: id, role: options.role ?? 'gateway', labels: options.labels ?? {}, fleetId: 'test' })
    const claims = new Map<string, NodeClaims>()
    const denied = new Set<string>()
    const trust = {
      claims,
      denied,
      claimsFor: (p: string) => claims.get(p),
      isDenied: (p: string) => denied.has(p),
      learnCertificate: async (c: string, p: string) => {
        const verified = await verifyNodeCertificate(c, this.fleet.publicKey, p)
        claims.set(p, verified)
        return verified
      }
    }
    const probes: ProbeResult[] = []
    const rejected: string[] = []
    const membership = new Membership({
      peerId,
      privateKey,
      registry: { list: () => [], value: () => undefined, onChange: () => () => {} },
      trust,
      transport: this.net.transport(id),
      addresses: () => [`/ip4/127.0.0.1/tcp/${4000 + this.nodes.length}`],
      logger: pino({ level: process.env.LOG ?? 'silent' }).child({ node: name }),
      metrics: { probe: r => { probes.push(r) }, members: () => {}, localHealth: () => {}, clockSelf: () => {}, recordMismatch: () => {}, rejected: code => { rejected.push(code) } }
    }, init)
    const node = { name, peerId, id, privateKey, cert, trust, membership, probes, rejected }
    this.nodes.push(node)
    return node
  }

  /**
   * A member with a valid certificate that does not run membership but
   * answers on the network as `handler` says (a liar, in tests). Its
   * certificate is learnt by the others at `introduce()`.
   */
  async addStub (name: string, handler: (self: { id: string, privateKey: PrivateKey }) => Promise<TransportHandler>): Promise<{ id: string, transport: MemorySwimTransport }> {
    const privateKey = await generateKeyPair('Ed25519')
    const id = peerIdFromPrivateKey(privateKey).toString()
    const cert = await issueNodeCertificate(this.fleet.privateKey, { peerId: id, role: 'gateway', fleetId: 'test' })
    this.#stubs.push({ id, cert })
    const transport = this.net.transport(id)
    await transport.start(await handler({ id, privateKey }))
    return { id, transport }
  }

  readonly #stubs: Array<{ id: string, cert: string }> = []

  /** Everyone learns everyone's certificate. */
  async introduce (): Promise<void> {
    const all = [...this.nodes.map(n => ({ id: n.id, cert: n.cert })), ...this.#stubs]
    for (const a of this.nodes) for (const b of all) await a.trust.learnCertificate(b.cert, b.id)
  }

  node (name: string): SwimNode {
    const n = this.nodes.find(x => x.name === name)
    if (n == null) throw new Error(`no node ${name}`)
    return n
  }

  /** What `observer` thinks of `subject`. */
  state (observer: string, subject: string): MemberState {
    return this.node(observer).membership.stateOf(this.node(subject).id)
  }

  /** Every one of `observers` sees every one of `subjects` in `state`. */
  all (observers: string[], subjects: string[], state: MemberState): boolean {
    return observers.every(o => subjects.every(s => o === s || this.state(o, s) === state))
  }

  async stop (): Promise<void> {
    await Promise.all(this.nodes.map(async n => { await n.membership.stop() }))
  }
}
