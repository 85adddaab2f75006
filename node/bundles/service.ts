import { rm } from 'node:fs/promises'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { chunkCount, resolveLimits, type BundleLimits } from '../../packaging/bundle/index.ts'
import { verifyAnyBundle, type VerifiedAnyBundle } from '../../packaging/release/verify.ts'
import { serveTransfer, type TransferSource } from '../../protocols/bundle-transfer/server.ts'
import { BUNDLE_PROTOCOL } from '../../protocols/bundle-transfer/wire.ts'
import { BundleNotFoundError, StoreFullError, TransferFailedError } from './errors.ts'
import { RateLimiter } from './rate-limit.ts'
import { referencedDigests } from './references.ts'
import { BundleStore, type BundleRecord } from './store.ts'
import { Transfer, type TransferInit, type TransferMetrics, type TransferStatus } from './transfer.ts'
import { isDiskFull } from '../store/disk-guard.ts'
import { diskGuardOf, type Database } from '../store/db.ts'
import type { Registry } from '../registry/registry.ts'
import type { Connection, PeerId, Startable, Stream, StreamHandler } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'

export const DEFAULT_MAX_STORE_BYTES = 2 * 1024 ** 3

/** What `bundle/<digest>/<peerId>` holds: a hint that this peer can serve the bundle. */
export interface BundleAdvert {
  size: number
  complete: boolean
  name?: string
  version?: string
  /** set for agent releases, which deployments never resolve to */
  kind?: 'release'
}

export interface BundleMetrics extends TransferMetrics {
  chunkServed(bytes: number): void
  storeBytes(bytes: number, bundles: { complete: number, partial: number }): void
}

export interface BundleServiceComponents {
  peerId: string
  dataDir: string
  db: Database
  registry: Pick<Registry, 'set' | 'delete' | 'list' | 'value' | 'onChange'>
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number, maxOutboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
    getConnections(peer?: PeerId): Connection[]
    dial(addr: Multiaddr[], options?: { signal?: AbortSignal }): Promise<Connection>
  }
  trust: { isVerified(peerId: string): boolean }
  fleetPublicKey: KeyObject
  logger: Logger
  metrics?: BundleMetrics
}

export interface BundleServiceInit extends TransferInit {
  /** Bundles kept on disk, complete and partial. @default DEFAULT_MAX_STORE_BYTES */
  maxStoreBytes?: number
  /** Cap on the rate chunks are served at; 0 is unlimited. @default 0 */
  uploadBytesPerSec?: number
  /** Serve and advertise bundles to peers; false makes a download-only node. @default true */
  share?: boolean
  /** Unpacking limits applied when verifying. @default packaging DEFAULT_LIMITS */
  limits?: Partial<BundleLimits>
}

/** A bundle as the API lists it. */
export interface BundleView {
  digest: string
  state: 'complete' | 'partial'
  size: number
  chunks: number
  name?: string
  version?: string
  publisher?: string
  kind?: 'model' | 'release'
  storedAt: number
  lastUsedAt: number
  transfer?: TransferStatus
}

/**
 * The agent's bundles: a content-addressed store, the provider side of the
 * transfer protocol, pulls from the mesh, and the registry adverts under
 * `bundle/<digest>/<self>` that tell peers who holds what.
 */
export class BundleService implements Startable {
  readonly store: BundleStore
  readonly #c: BundleServiceComponents
  readonly #init: BundleServiceInit
  readonly #maxStoreBytes: number
  readonly #limits: BundleLimits
  readonly #limiter: RateLimiter
  readonly #transfers = new Map<string, Transfer>()
  readonly #finished = new Map<string, TransferStatus>()
  readonly #log: Logger
  #started = false

  constructor (components: BundleServiceComponents, init: BundleServiceInit = {}) {
    this.#c = components
    this.#init = init
    this.#maxStoreBytes = init.maxStoreBytes ?? DEFAULT_MAX_STORE_BYTES
    this.#limits = resolveLimits(init.limits)
    this.#limiter = new RateLimiter(init.uploadBytesPerSec ?? 0)
    this.#log = components.logger
    this.store = new BundleStore(components.dataDir, components.db)
    // pulls that stopped on a full disk kept their verified chunks; they go on once there is space
    diskGuardOf(components.db)?.addEventListener('resume', () => {
      for (const r of this.store.list()) if (r.state === 'partial') this.#startTransfer(r.digest)
    })
  }

  async start (): Promise<void> {
    await this.store.open()
    await this.#c.network.handle(BUNDLE_PROTOCOL, this.#serve, { maxInboundStreams: 64, maxOutboundStreams: 64 })
    this.#started = true
    // adverts of ours that outlived their bundle (evicted while we were down, or lost) go
    for (const e of this.#c.registry.list<BundleAdvert>('bundle/')) {
      const [, digest, owner] = e.key.split('/')
      if (owner === this.#c.peerId && digest != null && this.store.get(digest) == null) await this.#c.registry.delete(e.key).catch(() => {})
    }
    for (const r of this.store.list()) {
      if (r.state === 'complete') await this.#advertise(r)
      else this.#startTransfer(r.digest)
    }
    this.#updateGauges()
  }

  async stop (): Promise<void> {
    this.#started = false
    await Promise.all([...this.#transfers.values()].map(async t => { await t.abort() }))
    await this.#c.network.unhandle(BUNDLE_PROTOCOL)
    await this.store.close()
  }

  /** An upload can be no larger than the whole store. */
  get maxUploadBytes (): number {
    return this.#maxStoreBytes
  }

  list (): BundleView[] {
    return this.store.list().map(r => this.#view(r))
  }

  /** A held or pulling bundle; BundleNotFoundError otherwise. */
  get (digest: string): BundleView {
    const r = this.store.get(digest)
    if (r != null) return this.#view(r)
    const status = this.#transfers.get(digest)?.status() ?? this.#finished.get(digest)
    if (status == null) throw new BundleNotFoundError(`bundle ${digest} is neither held nor being pulled here`)
    return { digest, state: 'partial', size: status.size ?? 0, chunks: status.chunks ?? 0, storedAt: status.startedAt, lastUsedAt: status.startedAt, transfer: status }
  }

  /**
   * Take a signed bundle handed to this agent (a file it may move): verify
   * it completely, store it and advertise it.
   */
  async publish (file: string): Promise<{ bundle: BundleView, verified: VerifiedAnyBundle, created: boolean }> {
    let verified: VerifiedAnyBundle
    try {
      verified = await verifyAnyBundle(file, { fleetPublicKey: this.#c.fleetPublicKey, limits: this.#limits })
    } catch (err) {
      await rm(file, { force: true })
      throw err
    }
    const existing = this.store.get(verified.digest)
    if (existing?.state === 'complete') {
      await rm(file, { force: true })
      return { bundle: this.#view(existing), verified, created: false }
    }
    if (existing != null) await this.#transfers.get(verified.digest)?.abort()
    await this.store.remove(verified.digest)
    try {
      await this.#makeRoom(verified.size)
    } catch (err) {
      await rm(file, { force: true })
      throw err
    }
    const record = await this.store.addComplete(file, verified)
    await this.#advertise(record)
    this.#log.info({ digest: record.digest, kind: verified.kind, name: record.name, version: record.version, signer: verified.signer, size: record.size }, 'bundle published')
    this.#updateGauges()
    return { bundle: this.#view(record), verified, created: true }
  }

  /** Start (or join) a pull of `digest` from the mesh; returns at once. */
  pull (digest: string): BundleView {
    const r = this.store.get(digest)
    if (r?.state === 'complete') return this.#view(r)
    this.#startTransfer(digest)
    return this.get(digest)
  }

  /** Wait for a pull to end; the complete bundle, or the failure. */
  async waitFor (digest: string): Promise<BundleView> {
    const t = this.#transfers.get(digest)
    if (t != null) await t.done.catch(() => {})
    const view = this.get(digest)
    if (view.state !== 'complete') throw new TransferFailedError(`pull of ${digest} failed: ${view.transfer?.error?.message ?? 'unknown'}`)
    return view
  }

  /** Where a complete bundle's zip is, for the runtime to unpack. */
  pathOf (digest: string): string {
    const r = this.store.get(digest)
    if (r?.state !== 'complete') throw new BundleNotFoundError(`bundle ${digest} is not held here`)
    this.store.touch(digest)
    return this.store.pathOf(r)
  }

  #startTransfer (digest: string): void {
    if (this.#transfers.has(digest) || !this.#started) return
    this.#finished.delete(digest)
    const t = new Transfer({
      digest,
      store: this.store,
      providers: () => this.#providersOf(digest),
      openStream: async (peer, signal) => await this.#openStream(peer, signal),
      verify: async (path, index) => await verifyAnyBundle(path, { fleetPublicKey: this.#c.fleetPublicKey, limits: this.#limits, digest, chunksVerified: index }),
      onPartial: async record => {
        await this.#makeRoom(0, digest)
        await this.#advertise(record)
      },
      ...(this.#c.metrics == null ? {} : { metrics: this.#c.metrics }),
      logger: this.#log
    }, this.#init)
    this.#transfers.set(digest, t)
    t.done.then(async record => {
      await this.#advertise(record)
      this.#updateGauges()
    }, async err => {
      if (!this.#started) return
      if (isDiskFull(err)) {
        // logged once by the guard; the partial file and its verified chunks stay for the resumed pull
        if (diskGuardOf(this.#c.db)?.report(err) !== true) this.#log.warn({ digest, err: err.message }, 'bundle pull stopped: the disk is full')
        return
      }
      this.#log.warn({ digest, err: err.message, code: err.code }, 'bundle pull failed')
      // a bundle that hashed right but fails verification can never become usable: drop it
      if (err.code !== 'ERR_NO_PROVIDERS') {
        await this.store.remove(digest)
        await this.#c.registry.delete(`bundle/${digest}/${this.#c.peerId}`).catch(() => {})
      }
    }).finally(() => {
      this.#finished.set(digest, t.status())
      this.#transfers.delete(digest)
    })
  }

  #providersOf (digest: string): string[] {
    return this.#c.registry.list<BundleAdvert>(`bundle/${digest}/`)
      .map(e => e.key.split('/')[2] ?? '')
      .filter(p => p !== '' && p !== this.#c.peerId)
  }

  async #openStream (peer: string, signal: AbortSignal): Promise<Stream> {
    const id = peerIdFromString(peer)
    let conn = this.#c.network.getConnections(id).find(c => c.status === 'open')
    if (conn == null) {
      const addrs = this.#c.registry.value<{ addresses?: string[] }>(`node/${peer}`)?.addresses ?? []
      if (addrs.length === 0) throw new Error(`no known address for ${peer}`)
      conn = await this.#c.network.dial(addrs.map(a => multiaddr(a)), { signal })
    }
    // the provider serves fleet members only, and learns that we are one through the certificate exchange
    while (!this.#c.trust.isVerified(peer)) {
      if (signal.aborted) throw signal.reason
      await new Promise(resolve => setTimeout(resolve, 25))
    }
    return await conn.newStream(BUNDLE_PROTOCOL, { signal })
  }

  /** Evict unreferenced complete bundles, least recently used first, until `extra` more bytes fit. */
  async #makeRoom (extra: number, keep?: string): Promise<void> {
    if (this.store.usedBytes() + extra <= this.#maxStoreBytes) return
    const refs = referencedDigests([...this.#c.registry.list('deployment/'), ...this.#c.registry.list('rollout/')], this.store.list())
    const victims = this.store.list()
      .filter(r => r.state === 'complete' && r.digest !== keep && !refs.has(r.digest))
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt)
    for (const v of victims) {
      if (this.store.usedBytes() + extra <= this.#maxStoreBytes) break
      await this.store.remove(v.digest)
      await this.#c.registry.delete(`bundle/${v.digest}/${this.#c.peerId}`).catch(() => {})
      this.#log.info({ digest: v.digest, name: v.name, version: v.version, size: v.size }, 'bundle evicted')
    }
    this.#updateGauges()
    if (this.store.usedBytes() + extra > this.#maxStoreBytes) {
      throw new StoreFullError(`bundle store holds ${this.store.usedBytes()} bytes of referenced or in-flight bundles; ${extra} more exceed the budget of ${this.#maxStoreBytes}`)
    }
  }

  async #advertise (r: BundleRecord): Promise<void> {
    if (this.#init.share === false) return
    const advert: BundleAdvert = { size: r.size, complete: r.state === 'complete', ...(r.name == null ? {} : { name: r.name }), ...(r.version == null ? {} : { version: r.version }), ...(r.kind === 'release' ? { kind: 'release' as const } : {}) }
    const key = `bundle/${r.digest}/${this.#c.peerId}`
    const current = this.#c.registry.value<BundleAdvert>(key)
    if (current != null && JSON.stringify(current) === JSON.stringify(advert)) return
    await this.#c.registry.set(key, advert)
  }

  #view (r: BundleRecord): BundleView {
    const transfer = this.#transfers.get(r.digest)?.status() ?? this.#finished.get(r.digest)
    return {
      digest: r.digest,
      state: r.state,
      size: r.size,
      chunks: chunkCount(r.index),
      ...(r.name == null ? {} : { name: r.name }),
      ...(r.version == null ? {} : { version: r.version }),
      ...(r.publisher == null ? {} : { publisher: r.publisher }),
      ...(r.kind == null ? {} : { kind: r.kind }),
      storedAt: r.storedAt,
      lastUsedAt: r.lastUsedAt,
      ...(transfer == null ? {} : { transfer })
    }
  }

  #updateGauges (): void {
    const records = this.store.list()
    this.#c.metrics?.storeBytes(this.store.usedBytes(), {
      complete: records.filter(r => r.state === 'complete').length,
      partial: records.filter(r => r.state === 'partial').length
    })
  }

  readonly #source: TransferSource = {
    head: async digest => {
      const r = this.store.get(digest)
      if (r == null) return undefined
      return { size: r.size, tailOffset: r.tailOffset, midstate: Buffer.from(r.midstate, 'hex'), tail: await this.store.read(digest, r.tailOffset, r.size) }
    },
    have: digest => {
      const r = this.store.get(digest)
      if (r == null) return undefined
      if (r.state === 'complete') return { complete: true }
      const t = this.#transfers.get(digest)
      return { complete: false, chunks: t?.held() ?? [] }
    },
    chunk: async (digest, index) => {
      const r = this.store.get(digest)
      if (r == null || index >= chunkCount(r.index)) return undefined
      if (r.state === 'partial') {
        const held = this.#transfers.get(digest)?.held()
        if (held?.[index] !== true) return undefined
      }
      this.store.touch(digest)
      return await this.store.readChunk(r, index)
    },
    beforeSend: async (bytes, signal) => { await this.#limiter.take(bytes, signal) },
    sent: bytes => { this.#c.metrics?.chunkServed(bytes) }
  }

  readonly #serve = async (stream: Stream, connection: Connection): Promise<void> => {
    const peer = connection.remotePeer.toString()
    if (this.#init.share === false) {
      stream.abort(new Error('this node does not share bundles'))
      return
    }
    if (!this.#c.trust.isVerified(peer)) {
      stream.abort(new Error(`${peer} has not presented a fleet certificate`))
      return
    }
    try {
      await serveTransfer(stream, this.#source)
    } catch (err: any) {
      this.#log.debug({ peer, err: err.message }, 'serving bundle chunks ended with an error')
    }
  }
}
