import { generateKeyPairSync } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { streamPair } from '@libp2p/utils'
import { pino } from 'pino'
import { issueNodeCertificate, verifyNodeCertificate, type NodeClaims, type Role } from '../../node/identity/certificate.ts'
import { Registry, type RegistryComponents, type RegistryInit, type WriterTrust } from '../../node/registry/registry.ts'
import { MemoryRegistryStore, type RegistryStore } from '../../node/registry/store.ts'
import { authorizeRegistryWrite, type AuthorizeOptions } from '../../packaging/trust.ts'
import type { Message } from '@libp2p/gossipsub'
import type { PeerId, PrivateKey, Stream, StreamHandler } from '@libp2p/interface'

/**
 * Registries wired together in one process: gossip is delivered through each
 * registry's real validator, sync streams are real libp2p stream pairs. For
 * unit tests of the registry logic; the multi-process tests use real libp2p.
 */
export class MemoryMesh {
  readonly fleet = generateKeyPairSync('ed25519')
  readonly members: MemoryMember[] = []
  /** when false, gossip is dropped (to make replicas diverge) */
  gossip = true
  /** when set, gossip from one member reaches another only where this says so (a partition) */
  linked?: (from: string, to: string) => boolean

  async add (options: { store?: RegistryStore, privateKey?: PrivateKey, syncIntervalMs?: number, role?: Role, labels?: Record<string, string>, init?: RegistryInit, components?: Partial<Pick<RegistryComponents, 'logger' | 'metrics'>> } = {}): Promise<MemoryMember> {
    const privateKey = options.privateKey ?? await generateKeyPair('Ed25519')
    const peerId = peerIdFromPrivateKey(privateKey)
    const cert = await issueNodeCertificate(this.fleet.privateKey, { peerId: peerId.toString(), role: options.role ?? 'gateway', labels: options.labels ?? {}, fleetId: 'test' })
    const member = new MemoryMember(this, peerId, privateKey, cert, options.store ?? new MemoryRegistryStore(), { syncIntervalMs: options.syncIntervalMs ?? 3_600_000, ...options.init }, options.components)
    this.members.push(member)
    return member
  }

  /** Every member learns every other member's certificate, as the cert exchange would do. */
  async introduce (): Promise<void> {
    for (const a of this.members) for (const b of this.members) await a.trust.learnCertificate(b.cert, b.peerId.toString())
  }

  /** A fleet authorisation for `member` to write `value` (undefined deletes) under `key`, at the stamp it hands out. */
  async authorize (member: MemoryMember, key: string, value: unknown, options: AuthorizeOptions = {}): Promise<string> {
    const { writer, ts } = member.registry.stampFor(key)
    return await authorizeRegistryWrite({ key, valueJson: value === undefined ? null : JSON.stringify(value), writer, ts }, { key: this.fleet.privateKey }, options)
  }

  member (peerId: PeerId | string): MemoryMember {
    const m = this.members.find(m => m.peerId.toString() === peerId.toString())
    if (m == null) throw new Error(`no member ${peerId.toString()}`)
    return m
  }
}

export class MemoryMember {
  readonly peerId: PeerId
  readonly privateKey: PrivateKey
  readonly cert: string
  readonly registry: Registry
  readonly trust: WriterTrust & { claims: Map<string, NodeClaims>, revoked: Set<string> }
  readonly handlers = new Map<string, StreamHandler>()
  /** what its registry dials and handles with: other members' handlers over in-memory stream pairs */
  readonly network: RegistryComponents['network']
  readonly #listeners = new Set<(evt: CustomEvent<Message>) => void>()
  readonly #validators = new Map<string, any>()

  constructor (mesh: MemoryMesh, peerId: PeerId, privateKey: PrivateKey, cert: string, store: RegistryStore, init: RegistryInit = {}, components: Partial<Pick<RegistryComponents, 'logger' | 'metrics'>> = {}) {
    this.peerId = peerId
    this.privateKey = privateKey
    this.cert = cert
    const claims = new Map<string, NodeClaims>()
    const certs = new Map<string, string>()
    const revoked = new Set<string>()
    this.trust = {
      claims,
      revoked,
      fleetPublicKey: mesh.fleet.publicKey,
      claimsFor: id => revoked.has(id) ? undefined : claims.get(id),
      learnCertificate: async (c, id) => {
        if (revoked.has(id)) throw new Error(`${id} is revoked`)
        const verified = await verifyNodeCertificate(c, mesh.fleet.publicKey, id)
        claims.set(id, verified)
        certs.set(id, c)
        return verified
      },
      knowsCertificate: (c, id) => certs.get(id) === c,
      isVerified: id => claims.has(id) && !revoked.has(id),
      isDenied: id => revoked.has(id),
      isRevoked: id => revoked.has(id),
      revoke: id => { revoked.add(id); claims.delete(id) },
      verifiedPeers: () => mesh.members.filter(m => m !== this && !revoked.has(m.peerId.toString())).map(m => m.peerId)
    }
    const self = this
    const pubsub: RegistryComponents['pubsub'] = {
      topicValidators: this.#validators as any,
      subscribe () {},
      unsubscribe () {},
      async publish (topic: string, data?: Uint8Array) {
        if (!mesh.gossip || data == null) return { recipients: [] }
        for (const other of mesh.members) {
          if (other === self || mesh.linked?.(self.peerId.toString(), other.peerId.toString()) === false) continue
          await other.deliver({ type: 'unsigned', topic, data }, self.peerId)
        }
        return { recipients: [] }
      },
      addEventListener (_type: string, fn: any) { self.#listeners.add(fn) },
      removeEventListener (_type: string, fn: any) { self.#listeners.delete(fn) }
    } as any
    const network: RegistryComponents['network'] = this.network = {
      handle: async (protocol, handler) => { this.handlers.set(protocol, handler) },
      unhandle: async protocol => { this.handlers.delete(protocol) },
      dialProtocol: async (peer, protocol) => {
        const remote = mesh.member(peer)
        const handler = remote.handlers.get(protocol)
        if (handler == null) throw new Error(`${protocol} not handled`)
        const [outbound, inbound] = await streamPair()
        void Promise.resolve(handler(inbound, { remotePeer: this.peerId } as any))
        return outbound as Stream
      }
    }
    this.registry = new Registry({ peerId, privateKey, pubsub, network, trust: this.trust, store, logger: pino({ level: 'silent' }), ...components }, init)
  }

  /** Gossip arrival: the registry's validator decides, then the message event fires. */
  async deliver (msg: Message, from: PeerId): Promise<string> {
    const validate = this.#validators.get(msg.topic)
    // a topic this member does not follow: gossipsub neither validates nor delivers it
    if (validate == null) return 'ignore'
    const verdict = await validate(from, msg)
    if (verdict === 'accept') for (const fn of this.#listeners) fn(new CustomEvent('message', { detail: msg }))
    return verdict
  }
}
