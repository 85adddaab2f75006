import { TypedEventEmitter } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { deltaCodec, MAX_DELTA_ENTRIES, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { KEY_PATTERN, MAX_KEY_LENGTH, MAX_VALUE_BYTES, type WireEntry } from '../../protocols/registry/wire.ts'
import { answerSync, SYNC_PROTOCOL, syncWith, type SyncReplica, type SyncResult } from '../../protocols/registry-sync/index.ts'
import { verifyRegistryWrite } from '../../packaging/trust.ts'
import { authorityFor, DEFAULT_OWNERSHIP_RULES, type OwnershipRule } from './acl.ts'
import { compareEntries, signEntry, toRegistryEntry, verifyEntrySignature, type RegistryEntry } from './entry.ts'
import { BadEntrySignatureError, ClockDriftError, InvalidValueError, RegistryError, UnauthorizedWriteError, UnknownWriterError } from './errors.ts'
import { compareTimestamps, DEFAULT_MAX_DRIFT_MS, HybridLogicalClock, type Timestamp } from './hlc.ts'
import { ChangeFeed, type ChangeListener, type RegistryChange, type RegistryWatch } from './watch.ts'
import type { RegistryStore } from './store.ts'
import type { NodeClaims } from '../identity/certificate.ts'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import type { Connection, PeerId, PrivateKey, Startable, Stream, StreamHandler } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'

export const DEFAULT_SYNC_INTERVAL_MS = 15_000
const KEY_RE = new RegExp(KEY_PATTERN)

/** What the registry needs to know about fleet membership. */
export interface WriterTrust {
  readonly fleetPublicKey: KeyObject
  /** Claims of a valid certificate for this peer, when one is known. */
  claimsFor(peerId: string): NodeClaims | undefined
  /** Verify a certificate found in a `node/<peerId>` entry and remember it. */
  learnCertificate(cert: string, peerId: string): Promise<NodeClaims>
  /** Connected and through the certificate exchange. */
  isVerified(peerId: string): boolean
  isDenied(peerId: string): boolean
  verifiedPeers(): PeerId[]
}

export interface RegistryMetrics {
  gossipIn(count: number): void
  gossipOut(count: number): void
  rejected(reason: string): void
  synced(result: SyncResult): void
}

export interface RegistryComponents {
  peerId: PeerId
  privateKey: PrivateKey
  pubsub: Pick<GossipSub, 'subscribe' | 'unsubscribe' | 'publish' | 'topicValidators' | 'addEventListener' | 'removeEventListener'>
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
    dialProtocol(peer: PeerId, protocol: string, options?: { signal?: AbortSignal }): Promise<Stream>
  }
  trust: WriterTrust
  store: RegistryStore
  logger: Logger
  metrics?: RegistryMetrics
}

export interface RegistryInit {
  /** Anti-entropy with one random verified peer this often. @default DEFAULT_SYNC_INTERVAL_MS */
  syncIntervalMs?: number
  /** @default DEFAULT_MAX_DRIFT_MS */
  maxClockDriftMs?: number
  /** Ownership rules for keys a node may write without fleet authorisation. */
  rules?: readonly OwnershipRule[]
  /** @default Date.now */
  now?: () => number
}

export interface WriteOptions {
  /** Fleet authorisation (compact JWS) for keys this node does not own. */
  auth?: string
}

export interface RegistryEvents {
  /** A peer finished an anti-entropy round with us. */
  synced: CustomEvent<{ peer: string, result: SyncResult }>
}

/** Keys every node writes first so a peer can verify the rest (`node/` carries the certificate). */
function byCertificateFirst (a: WireEntry, b: WireEntry): number {
  return (b.k.startsWith('node/') ? 1 : 0) - (a.k.startsWith('node/') ? 1 : 0)
}

/**
 * The replicated registry: a last-writer-wins map with hybrid logical clock
 * timestamps, signed entries, deltas over gossipsub, anti-entropy over a
 * protocol of ours, and persistence in level.
 */
export class Registry extends TypedEventEmitter<RegistryEvents> implements Startable {
  readonly #c: RegistryComponents
  readonly #self: string
  readonly #rules: readonly OwnershipRule[]
  readonly #syncIntervalMs: number
  readonly #maxDriftMs: number
  readonly #now: () => number
  readonly #entries = new Map<string, WireEntry>()
  readonly #feed = new ChangeFeed()
  readonly #validated = new WeakMap<Uint8Array, WireEntry[]>()
  #clock: HybridLogicalClock
  #pending: WireEntry[] = []
  #flushScheduled = false
  #persisting: Promise<void> = Promise.resolve()
  #syncTimer?: NodeJS.Timeout
  #started = false
  readonly #log: Logger

  constructor (components: RegistryComponents, init: RegistryInit = {}) {
    super()
    this.#c = components
    this.#self = components.peerId.toString()
    this.#rules = init.rules ?? DEFAULT_OWNERSHIP_RULES
    this.#syncIntervalMs = init.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS
    this.#maxDriftMs = init.maxClockDriftMs ?? DEFAULT_MAX_DRIFT_MS
    this.#now = init.now ?? Date.now
    this.#clock = new HybridLogicalClock({ now: this.#now, maxDriftMs: this.#maxDriftMs })
    this.#log = components.logger
  }

  async start (): Promise<void> {
    let latest: Timestamp = [0, 0]
    for (const e of await this.#c.store.load()) {
      this.#entries.set(e.k, e)
      if (compareTimestamps(e.t, latest) > 0) latest = e.t
    }
    // resume the clock past everything on disk so new writes supersede old ones
    this.#clock = new HybridLogicalClock({ now: this.#now, maxDriftMs: this.#maxDriftMs, start: latest })
    this.#c.pubsub.topicValidators.set(REGISTRY_TOPIC, this.#validateGossip)
    this.#c.pubsub.addEventListener('message', this.#onGossip)
    this.#c.pubsub.subscribe(REGISTRY_TOPIC)
    await this.#c.network.handle(SYNC_PROTOCOL, this.#answerSync, { maxInboundStreams: 8 })
    this.#syncTimer = setInterval(() => { this.#syncRandomPeer() }, this.#syncIntervalMs)
    this.#syncTimer.unref()
    this.#started = true
    this.#log.info({ keys: this.#entries.size }, 'registry loaded')
  }

  async stop (): Promise<void> {
    this.#started = false
    clearInterval(this.#syncTimer)
    this.#c.pubsub.unsubscribe(REGISTRY_TOPIC)
    this.#c.pubsub.removeEventListener('message', this.#onGossip)
    this.#c.pubsub.topicValidators.delete(REGISTRY_TOPIC)
    await this.#c.network.unhandle(SYNC_PROTOCOL)
    await this.#persisting
  }

  get size (): number {
    return this.#entries.size
  }

  get (key: string): RegistryEntry | undefined {
    const e = this.#entries.get(key)
    return e == null ? undefined : toRegistryEntry(e)
  }

  /** The live value of a key; undefined when absent or deleted. */
  value<T = unknown> (key: string): T | undefined {
    const e = this.#entries.get(key)
    return e?.v == null ? undefined : JSON.parse(e.v) as T
  }

  /** Entries under a prefix, tombstones left out unless asked for. */
  list<T = unknown> (prefix = '', options: { tombstones?: boolean } = {}): Array<RegistryEntry<T>> {
    const out: Array<RegistryEntry<T>> = []
    for (const e of this.#entries.values()) {
      if (!e.k.startsWith(prefix)) continue
      if (e.v == null && options.tombstones !== true) continue
      out.push(toRegistryEntry<T>(e))
    }
    return out.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0)
  }

  /** Every entry as it travels, for anti-entropy and inspection. */
  wireEntries (): IterableIterator<WireEntry> {
    return this.#entries.values()
  }

  async set (key: string, value: unknown, options: WriteOptions = {}): Promise<RegistryEntry> {
    if (value === undefined) throw new InvalidValueError(`${key}: value is undefined; use delete()`)
    let json: string
    try {
      json = JSON.stringify(value)
    } catch (err) {
      throw new InvalidValueError(`${key}: value is not JSON`, { cause: err })
    }
    return await this.#write(key, json, options)
  }

  async delete (key: string, options: WriteOptions = {}): Promise<RegistryEntry> {
    return await this.#write(key, null, options)
  }

  /** Changes under `prefix` as an async iterator. */
  watch (prefix = '', signal?: AbortSignal): RegistryWatch {
    return this.#feed.watch(prefix, signal)
  }

  /** Call `fn` synchronously for every change under `prefix`; returns the unsubscribe function. */
  onChange (prefix: string, fn: ChangeListener): () => void {
    return this.#feed.onChange(prefix, fn)
  }

  /** Run one anti-entropy round with `peer`. */
  async syncWith (peer: PeerId, signal?: AbortSignal): Promise<SyncResult> {
    const stream = await this.#c.network.dialProtocol(peer, SYNC_PROTOCOL, { signal })
    const result = await syncWith(stream, this.#replica, { signal })
    this.#c.metrics?.synced(result)
    this.safeDispatchEvent('synced', { detail: { peer: peer.toString(), result } })
    return result
  }

  /**
   * Verify and merge entries from a peer. Entries that would not win are
   * skipped before any crypto; invalid ones are counted and dropped.
   */
  async merge (entries: WireEntry[]): Promise<{ applied: number, rejected: number }> {
    const fresh: WireEntry[] = []
    let rejected = 0
    for (const e of [...entries].sort(byCertificateFirst)) {
      if (!this.#wouldWin(e)) continue
      try {
        await this.#verify(e)
        fresh.push(e)
      } catch (err: any) {
        rejected++
        this.#reject(err, e)
      }
    }
    return { applied: this.#apply(fresh, 'sync'), rejected }
  }

  #wouldWin (e: WireEntry): boolean {
    const current = this.#entries.get(e.k)
    return current == null || compareEntries(e, current) > 0
  }

  async #write (key: string, json: string | null, options: WriteOptions): Promise<RegistryEntry> {
    if (key.length > MAX_KEY_LENGTH || !KEY_RE.test(key)) throw new InvalidValueError(`key "${key}" is not a valid registry key`)
    if (json != null && Buffer.byteLength(json) > MAX_VALUE_BYTES) throw new InvalidValueError(`${key}: value exceeds ${MAX_VALUE_BYTES} bytes`)
    const authority = authorityFor(key, this.#rules)
    if (authority.kind === 'owner' && authority.owner !== this.#self) {
      throw new UnauthorizedWriteError(`${key} belongs to ${authority.owner}`)
    }
    if (authority.kind === 'fleet') {
      if (options.auth == null) throw new UnauthorizedWriteError(`${key} needs a fleet authorisation`)
      try {
        await verifyRegistryWrite(options.auth, key, json, this.#c.trust.fleetPublicKey)
      } catch (err: any) {
        throw new UnauthorizedWriteError(`${key}: ${err.message}`, { cause: err })
      }
    }
    const unsigned: Omit<WireEntry, 's'> = { k: key, v: json, t: this.#clock.tick(), w: this.#self }
    if (authority.kind === 'fleet') unsigned.a = options.auth
    const entry = await signEntry(this.#c.privateKey, unsigned)
    this.#apply([entry], 'local')
    this.#pending.push(entry)
    this.#scheduleFlush()
    return toRegistryEntry(entry)
  }

  async #verify (e: WireEntry): Promise<void> {
    if (e.t[0] > this.#now() + this.#maxDriftMs) {
      throw new ClockDriftError(`${e.k}: timestamp is ${e.t[0] - this.#now()} ms in the future`)
    }
    let claims = this.#c.trust.claimsFor(e.w)
    if (claims == null && e.k === `node/${e.w}` && e.v != null) {
      const cert = (JSON.parse(e.v) as { cert?: unknown }).cert
      if (typeof cert === 'string') {
        try {
          claims = await this.#c.trust.learnCertificate(cert, e.w)
        } catch (err) {
          throw new UnknownWriterError(`${e.k}: certificate of ${e.w} is not valid`, { cause: err })
        }
      }
    }
    if (claims == null) throw new UnknownWriterError(`${e.k}: ${e.w} holds no certificate of this fleet`)
    if (!await verifyEntrySignature(e)) throw new BadEntrySignatureError(`${e.k}: signature of ${e.w} does not verify`)
    const authority = authorityFor(e.k, this.#rules)
    if (authority.kind === 'owner') {
      if (authority.owner !== e.w) throw new UnauthorizedWriteError(`${e.k}: written by ${e.w}, owned by ${authority.owner}`)
      return
    }
    if (e.a == null) throw new UnauthorizedWriteError(`${e.k}: no fleet authorisation`)
    try {
      await verifyRegistryWrite(e.a, e.k, e.v, this.#c.trust.fleetPublicKey)
    } catch (err: any) {
      throw new UnauthorizedWriteError(`${e.k}: ${err.message}`, { cause: err })
    }
  }

  /** Install entries that won; returns how many changed state. */
  #apply (entries: WireEntry[], via: RegistryChange['via']): number {
    const changed: WireEntry[] = []
    for (const e of entries) {
      const previous = this.#entries.get(e.k)
      if (previous != null && compareEntries(e, previous) <= 0) continue
      if (via !== 'local') {
        try {
          this.#clock.observe(e.t)
        } catch {
          continue
        }
      }
      this.#entries.set(e.k, e)
      changed.push(e)
      const change = { key: e.k, entry: toRegistryEntry(e), via, ...(previous == null ? {} : { previous: toRegistryEntry(previous) }) }
      try {
        this.#feed.emit(change)
      } catch (err) {
        this.#log.error({ err, key: e.k }, 'registry change listener failed')
      }
    }
    if (changed.length > 0) {
      this.#persisting = this.#persisting
        .then(async () => { await this.#c.store.put(changed) })
        .catch(err => { this.#log.error({ err }, 'persisting registry entries failed') })
    }
    return changed.length
  }

  #reject (err: any, e?: WireEntry): void {
    const reason = err instanceof RegistryError ? err.code : (err?.code ?? 'ERR_UNKNOWN')
    this.#c.metrics?.rejected(reason)
    this.#log.debug({ reason, key: e?.k, writer: e?.w, err: err?.message }, 'registry entry rejected')
  }

  #scheduleFlush (): void {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    setImmediate(() => {
      this.#flushScheduled = false
      const pending = this.#pending
      this.#pending = []
      for (let i = 0; i < pending.length; i += MAX_DELTA_ENTRIES) {
        const entries = pending.slice(i, i + MAX_DELTA_ENTRIES)
        if (!this.#started) continue
        this.#c.pubsub.publish(REGISTRY_TOPIC, deltaCodec.encode({ entries }))
          .then(() => this.#c.metrics?.gossipOut(1))
          .catch(err => { this.#log.debug({ err: err.message }, 'publishing registry delta failed') })
      }
    })
  }

  /**
   * Gossip validator: only certified fleet members' own signed writes pass.
   * Every entry is verified against its writer's certificate and signature,
   * so a relay that is still in the certificate exchange may pass messages
   * on; a relay or author that failed it is rejected outright.
   */
  readonly #validateGossip = async (peer: PeerId, msg: Message): Promise<TopicValidatorResult> => {
    if (msg.type !== 'signed') {
      this.#reject({ code: 'ERR_UNSIGNED_GOSSIP' })
      return TopicValidatorResult.Reject
    }
    const source = peer.toString()
    const author = msg.from.toString()
    if (this.#c.trust.isDenied(source) || this.#c.trust.isDenied(author)) {
      this.#reject({ code: 'ERR_DENIED_PEER' })
      return TopicValidatorResult.Reject
    }
    let entries: WireEntry[]
    try {
      entries = deltaCodec.decode(msg.data).entries
    } catch (err) {
      this.#reject(err)
      return TopicValidatorResult.Reject
    }
    const fresh: WireEntry[] = []
    for (const e of entries.sort(byCertificateFirst)) {
      if (e.w !== author) {
        this.#reject({ code: 'ERR_FOREIGN_WRITER' }, e)
        return TopicValidatorResult.Reject
      }
      if (!this.#wouldWin(e)) continue
      try {
        await this.#verify(e)
      } catch (err) {
        this.#reject(err, e)
        // an unknown writer may simply not have reached us yet: drop quietly
        return err instanceof UnknownWriterError ? TopicValidatorResult.Ignore : TopicValidatorResult.Reject
      }
      fresh.push(e)
    }
    this.#validated.set(msg.data, fresh)
    return TopicValidatorResult.Accept
  }

  readonly #onGossip = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    if (msg.topic !== REGISTRY_TOPIC) return
    const entries = this.#validated.get(msg.data)
    if (entries == null) return
    this.#validated.delete(msg.data)
    this.#c.metrics?.gossipIn(1)
    this.#apply(entries, 'gossip')
  }

  readonly #replica: SyncReplica = {
    entries: () => this.#entries.values(),
    merge: async (entries) => { await this.merge(entries) }
  }

  readonly #answerSync = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    if (!this.#c.trust.isVerified(peer)) {
      this.#reject({ code: 'ERR_UNVERIFIED_SOURCE' })
      stream.abort(new UnknownWriterError(`${peer} has not presented a certificate`))
      return
    }
    try {
      const result = await answerSync(stream, this.#replica)
      this.#c.metrics?.synced(result)
      this.safeDispatchEvent('synced', { detail: { peer, result } })
    } catch (err: any) {
      this.#reject(err)
      this.#log.debug({ peer, err: err.message }, 'answering registry sync failed')
    }
  }

  #syncRandomPeer (): void {
    const peers = this.#c.trust.verifiedPeers()
    if (peers.length === 0) return
    const peer = peers[Math.floor(Math.random() * peers.length)]!
    this.syncWith(peer).catch(err => { this.#log.debug({ peer: peer.toString(), err: err.message }, 'registry sync failed') })
  }
}

export function registry (components: RegistryComponents, init?: RegistryInit): Registry {
  return new Registry(components, init)
}
