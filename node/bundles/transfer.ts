import { createHash } from 'node:crypto'
import { TypedEventEmitter } from '@libp2p/interface'
import { chunkCount, chunkRange, indexFromTail, ResumableSha256, tailOffsetOf } from '../../packaging/bundle/index.ts'
import type { ChunkIndex } from '../../packaging/bundle/chunk-index.ts'
import type { VerifiedAnyBundle } from '../../packaging/release/verify.ts'
import { TransferClient, TransferRefusedError } from '../../protocols/bundle-transfer/client.ts'
import { bitmapHas, MAX_CHUNK_BYTES } from '../../protocols/bundle-transfer/wire.ts'
import { NoProvidersError } from './errors.ts'
import { RateMeter, shuffle, sleep, type ProviderStatus, type TransferStatus, type TransferMetrics } from './transfer-status.ts'
import type { BundleRecord, BundleStore } from './store.ts'
import type { Stream } from '@libp2p/interface'
import type { Logger } from 'pino'

export type { ProviderStatus, TransferMetrics, TransferState, TransferStatus } from './transfer-status.ts'

export interface TransferComponents {
  digest: string
  store: BundleStore
  /** Peers that advertise the bundle (whole or in part), never ourselves. */
  providers(): string[]
  openStream(peer: string, signal: AbortSignal): Promise<Stream>
  /**
   * Verification of the finished file: signature, manifest, files. Every
   * chunk was checked against `index` (authenticated against the digest)
   * as it arrived or when a resume re-read it, so the whole file need not
   * be hashed again.
   */
  verify(path: string, index: ChunkIndex): Promise<VerifiedAnyBundle>
  /** The partial file exists: time to advertise it. */
  onPartial?(record: BundleRecord): Promise<void>
  metrics?: TransferMetrics
  logger: Logger
}

export interface TransferInit {
  /** Most providers fetched from at once. @default 8 */
  maxProviders?: number
  /**
   * Most requests in flight per provider. Each provider's pipeline holds
   * about `pipelineMs` of its measured throughput (at least 2 requests) up
   * to this cap. @default 4
   */
  requestsPerProvider?: number
  /** How much of a provider's measured throughput to keep requested ahead. @default 500 */
  pipelineMs?: number
  /** A provider must answer each request within this long. @default 15_000 */
  chunkTimeoutMs?: number
  /** Give up when nothing arrives for this long. @default 600_000 */
  stallTimeoutMs?: number
  /** Try a failed provider again after this long. @default 2_000 */
  retryMs?: number
  /** How often to look for new providers and refresh partial providers' holdings. @default 500 */
  tickMs?: number
}

interface Session {
  peer: string
  client?: TransferClient
  status: ProviderStatus
  bitmap?: Uint8Array
  /** chunk index → when it was requested from this provider */
  inflight: Map<number, number>
  retryAt: number
  haveAt: number
  rate: RateMeter
  /** smoothed throughput of this provider's replies, bytes/s; 0 before the first */
  bps: number
  lastReplyAt: number
}

/** Requests kept in flight to any provider, whatever its rate: one arriving, one queued behind it. */
const MIN_DEPTH = 2

/**
 * One pull of one bundle from the mesh. Learns the chunk index from the
 * zip's tail (checked against the digest before anything else is trusted),
 * then keeps several requests in flight to each of several providers,
 * rarest chunk first, verifying every chunk on arrival and writing it in
 * place in the partial file. A provider that fails is retried later; one
 * that sends a bad chunk is banned and counted. Progress is persisted, so a
 * restarted agent resumes with the chunks it already verified.
 */
export class Transfer extends TypedEventEmitter<{ progress: CustomEvent<TransferStatus> }> {
  readonly digest: string
  readonly done: Promise<BundleRecord>
  readonly #c: TransferComponents
  readonly #maxProviders: number
  readonly #depth: number
  readonly #pipelineMs: number
  readonly #chunkTimeoutMs: number
  readonly #stallTimeoutMs: number
  readonly #retryMs: number
  readonly #tickMs: number
  readonly #abort = new AbortController()
  readonly #sessions = new Map<string, Session>()
  readonly #rate = new RateMeter()
  #status: TransferStatus
  #record?: BundleRecord
  #have = new Uint8Array(0)
  #requested: number[] = []
  #requestedAt: number[] = []
  #rank: number[] = []
  #writing = new Set<number>()
  #count = 0
  #lastProgress = Date.now()
  #persistTimer?: NodeJS.Timeout
  #persisting: Promise<void> = Promise.resolve()
  #finish?: { resolve: () => void, reject: (err: Error) => void }

  constructor (components: TransferComponents, init: TransferInit = {}) {
    super()
    this.#c = components
    this.digest = components.digest
    this.#maxProviders = init.maxProviders ?? 8
    this.#depth = init.requestsPerProvider ?? 4
    this.#pipelineMs = init.pipelineMs ?? 500
    this.#chunkTimeoutMs = init.chunkTimeoutMs ?? 15_000
    this.#stallTimeoutMs = init.stallTimeoutMs ?? 600_000
    this.#retryMs = init.retryMs ?? 2_000
    this.#tickMs = init.tickMs ?? 500
    this.#status = {
      digest: this.digest, state: 'resolving', size: null, chunks: null, chunksHave: 0, bytesHave: 0, rateBps: 0,
      resumedChunks: 0, fetchedChunks: 0, duplicateChunks: 0, corruptChunks: 0, providers: [], startedAt: Date.now()
    }
    this.done = this.#run()
    this.done.catch(() => {})
  }

  status (): TransferStatus {
    return {
      ...this.#status,
      rateBps: this.#rate.bps,
      providers: [...this.#sessions.values()].map(s => ({ ...s.status, rateBps: s.rate.bps }))
    }
  }

  /** Stop (agent shutdown): progress is kept for the next start. */
  async abort (): Promise<void> {
    this.#abort.abort(new Error('transfer stopped'))
    this.#finish?.reject(new Error('transfer stopped'))
    await this.done.catch(() => {})
  }

  async #run (): Promise<BundleRecord> {
    const log = this.#c.logger
    const tick = setInterval(() => { this.#tick() }, this.#tickMs)
    try {
      const record = await this.#prepare()
      if (record.state === 'complete') return record
      this.#record = record
      await this.#c.onPartial?.(record)
      const n = chunkCount(record.index)
      this.#status = { ...this.#status, state: 'fetching', size: record.size, chunks: n }
      this.#requested = new Array(n).fill(0)
      this.#requestedAt = new Array(n).fill(0)
      this.#rank = Array.from({ length: n }, () => Math.random())
      if (this.#count < n) {
        await new Promise<void>((resolve, reject) => {
          this.#finish = { resolve, reject }
          this.#lastProgress = Date.now()
          this.#tick()
        })
      }
      clearInterval(tick)
      await this.#persistNow()
      // graceful closes can wait on a busy provider; the bundle need not
      for (const s of this.#sessions.values()) void s.client?.close()
      this.#status.state = 'verifying'
      this.#emit()
      const verified = await this.#c.verify(this.#c.store.pathOf(record), record.index)
      const complete = await this.#c.store.completePartial(this.digest, verified)
      this.#status = { ...this.#status, state: 'complete', finishedAt: Date.now() }
      log.info({ digest: this.digest, size: complete.size, fetched: this.#status.fetchedChunks, resumed: this.#status.resumedChunks, corrupt: this.#status.corruptChunks, ms: Date.now() - this.#status.startedAt }, 'bundle pulled')
      this.#emit()
      return complete
    } catch (err: any) {
      this.#status = { ...this.#status, state: 'failed', finishedAt: Date.now(), error: { code: err.code ?? 'ERR_TRANSFER', message: err.message } }
      this.#emit()
      throw err
    } finally {
      clearInterval(tick)
      clearTimeout(this.#persistTimer)
      await this.#persisting
      for (const s of this.#sessions.values()) s.client?.abort(new Error('transfer ended'))
    }
  }

  /** Resume a partial file (re-checking what it claims), or learn the index from a provider. */
  async #prepare (): Promise<BundleRecord> {
    const existing = this.#c.store.get(this.digest)
    if (existing?.state === 'complete') return existing
    if (existing?.state === 'partial') {
      const n = chunkCount(existing.index)
      this.#have = new Uint8Array(n)
      // Every chunk is re-hashed, not only those the saved bitmap lists: chunks
      // written in the last flush interval before a kill are on disk but not on
      // record, and a torn write before a power loss must not count. Hashing is
      // cheap next to fetching again; never-written (zero) ranges fail the hash.
      for (let i = 0; i < n; i++) {
        const data = await this.#c.store.readChunk(existing, i)
        if (createHash('sha256').update(data).digest('hex') === existing.index.hashes[i]) {
          this.#have[i] = 1
          this.#count++
          this.#status.bytesHave += data.byteLength
        }
      }
      this.#status.resumedChunks = this.#count
      this.#status.chunksHave = this.#count
      this.#status.bytesHave += existing.size - existing.index.covered
      this.#c.logger.info({ digest: this.digest, resumed: this.#count, chunks: n }, 'resuming bundle transfer')
      return existing
    }
    const deadline = Date.now() + this.#stallTimeoutMs
    while (!this.#abort.signal.aborted) {
      for (const peer of shuffle(this.#c.providers())) {
        const session = await this.#open(peer)
        if (session?.client == null) continue
        try {
          const head = await session.client.head(this.digest, this.#abort.signal)
          const ok = head.tailOffset % 64 === 0 && head.tailOffset + head.tail.byteLength === head.size &&
            Buffer.from(ResumableSha256.resume(head.midstate, head.tailOffset).update(head.tail).digest()).toString('hex') === this.digest
          const index = ok ? indexFromTail(head.tail, head.tailOffset, head.size) : undefined
          if (index == null || tailOffsetOf(index) !== head.tailOffset) {
            this.#ban(session, 'its zip tail does not hash to the digest')
            continue
          }
          this.#have = new Uint8Array(chunkCount(index))
          // the bytes past the chunks (the index itself) arrived with the head
          this.#status.bytesHave = head.size - index.covered
          return await this.#c.store.createPartial(this.digest, head, index)
        } catch (err: any) {
          this.#fail(session, err)
        }
      }
      if (Date.now() > deadline) throw new NoProvidersError(`no provider of ${this.digest} answered within ${this.#stallTimeoutMs} ms`)
      await sleep(this.#retryMs, this.#abort.signal)
    }
    throw this.#abort.signal.reason
  }

  async #open (peer: string): Promise<Session | undefined> {
    let session = this.#sessions.get(peer)
    if (session?.client != null || session?.status.state === 'banned' || session?.status.state === 'connecting') return session
    if (session != null && session.retryAt > Date.now()) return session
    session ??= { peer, status: { peer, complete: false, state: 'connecting', chunks: 0, bytes: 0, rateBps: 0 }, inflight: new Map(), retryAt: 0, haveAt: 0, rate: new RateMeter(), bps: 0, lastReplyAt: 0 }
    session.status.state = 'connecting'
    this.#sessions.set(peer, session)
    try {
      const stream = await this.#c.openStream(peer, AbortSignal.any([AbortSignal.timeout(10_000), this.#abort.signal]))
      const chunkSize = this.#record?.index.chunkSize ?? MAX_CHUNK_BYTES
      session.client = new TransferClient(stream, { replyTimeoutMs: this.#chunkTimeoutMs, maxBufferBytes: (this.#depth + 2) * (chunkSize + 64) + 512 * 1024 })
      session.status.state = 'active'
      delete session.status.error
    } catch (err: any) {
      this.#fail(session, err)
    }
    return session
  }

  /** Periodic: add providers, refresh partial providers' holdings, detect a stall. */
  #tick (): void {
    if (this.#record == null || this.#finish == null) return
    const active = [...this.#sessions.values()].filter(s => s.client != null || s.status.state === 'connecting')
    if (active.length < this.#maxProviders) {
      for (const peer of shuffle(this.#c.providers())) {
        if (active.length >= this.#maxProviders) break
        const s = this.#sessions.get(peer)
        if (s != null && (s.client != null || s.status.state === 'banned' || s.status.state === 'connecting' || s.retryAt > Date.now())) continue
        active.push(s ?? { peer } as Session)
        void this.#open(peer).then(async session => { if (session?.client != null) await this.#refreshHave(session) })
      }
    }
    for (const s of this.#sessions.values()) {
      if (s.client != null && !s.status.complete && Date.now() - s.haveAt >= this.#tickMs) void this.#refreshHave(s)
    }
    this.#fill()
    if (Date.now() - this.#lastProgress > this.#stallTimeoutMs) {
      this.#finish.reject(new NoProvidersError(`no chunk of ${this.digest} arrived for ${this.#stallTimeoutMs} ms`))
    }
  }

  async #refreshHave (s: Session): Promise<void> {
    if (s.client == null) return
    s.haveAt = Date.now()
    try {
      const have = await s.client.have(this.digest, this.#abort.signal)
      s.status.complete = have.complete
      if (have.bitmap != null) s.bitmap = have.bitmap
      this.#fill()
    } catch (err: any) {
      this.#fail(s, err)
    }
  }

  #holds (s: Session, i: number): boolean {
    return s.status.complete || (s.bitmap != null && bitmapHas(s.bitmap, i))
  }

  /**
   * Keep every usable provider's pipeline full, and no fuller than its rate
   * warrants. A deep queue at a slow provider (a seed whose uplink serves
   * many pullers) ties chunks to it that faster or nearer holders could
   * serve once they have them, and duplicates the seed's work across
   * pullers; a shallow one at a fast provider leaves its link idle.
   */
  #fill (): void {
    if (this.#record == null || this.#finish == null || this.#abort.signal.aborted) return
    for (const s of this.#sessions.values()) {
      if (s.client == null || s.haveAt === 0) continue
      const depth = this.#depthOf(s)
      while (s.inflight.size < depth) {
        const i = this.#pick(s)
        if (i < 0) break
        this.#request(s, i)
      }
    }
  }

  /** Rarest chunk this provider holds that nobody is fetching; in the endgame, a second copy of the oldest request. */
  #pick (s: Session): number {
    const n = this.#have.length
    let best = -1
    let bestAvail = Infinity
    const sessions = [...this.#sessions.values()].filter(x => x.client != null)
    for (let i = 0; i < n; i++) {
      if (this.#have[i] === 1 || this.#requested[i]! > 0 || this.#writing.has(i) || !this.#holds(s, i)) continue
      let avail = 0
      for (const x of sessions) if (this.#holds(x, i)) avail++
      if (avail < bestAvail || (avail === bestAvail && this.#rank[i]! < this.#rank[best]!)) {
        best = i
        bestAvail = avail
      }
    }
    if (best >= 0 || s.inflight.size > 0) return best
    // endgame: an idle provider re-requests what a slower one still owes, so one slow peer cannot hold the pull
    let oldest = Infinity
    for (let i = 0; i < n; i++) {
      if (this.#have[i] === 1 || this.#writing.has(i) || this.#requested[i] !== 1 || s.inflight.has(i) || !this.#holds(s, i)) continue
      if (this.#requestedAt[i]! < oldest) {
        oldest = this.#requestedAt[i]!
        best = i
      }
    }
    return best
  }

  #depthOf (s: Session): number {
    const ahead = Math.ceil(s.bps * this.#pipelineMs / 1000 / this.#record!.index.chunkSize)
    return Math.max(Math.min(MIN_DEPTH, this.#depth), Math.min(this.#depth, ahead + 1))
  }

  /**
   * A reply's throughput: its bytes over the time since the later of its
   * request and the previous reply (replies come in order, so with a full
   * pipeline that is the time the provider took to send it).
   */
  #observe (s: Session, bytes: number, requestedAt: number): void {
    const now = Date.now()
    const bps = bytes * 1000 / Math.max(1, now - Math.max(requestedAt, s.lastReplyAt))
    s.bps = s.bps === 0 ? bps : 0.7 * s.bps + 0.3 * bps
    s.lastReplyAt = now
  }

  #request (s: Session, i: number): void {
    const client = s.client!
    s.inflight.set(i, Date.now())
    this.#requested[i]!++
    this.#requestedAt[i] = Date.now()
    client.chunk(this.digest, i, this.#abort.signal).then(
      async data => { await this.#onChunk(s, client, i, data) },
      err => {
        if (!s.inflight.delete(i)) return
        this.#requested[i]!--
        if (err instanceof TransferRefusedError && err.reason === 'CHUNK_MISSING') {
          // a partial provider's holdings went stale; forget this chunk for it
          s.bitmap?.set([(s.bitmap[i >> 3] ?? 0) & ~(1 << (i & 7))], i >> 3)
          this.#fill()
          return
        }
        this.#fail(s, err)
      })
  }

  async #onChunk (s: Session, client: TransferClient, i: number, data: Iterable<Uint8Array>): Promise<void> {
    const requestedAt = s.inflight.get(i)
    if (requestedAt == null || !s.inflight.delete(i)) return
    this.#requested[i]!--
    const record = this.#record!
    const parts = [...data]
    let size = 0
    for (const p of parts) size += p.byteLength
    this.#observe(s, size, requestedAt)
    if (this.#have[i] === 1 || this.#writing.has(i)) {
      this.#status.duplicateChunks++
      this.#fill()
      return
    }
    const hash = createHash('sha256')
    for (const p of parts) hash.update(p)
    const { start, end } = chunkRange(record.index, i)
    if (size !== end - start || hash.digest('hex') !== record.index.hashes[i]) {
      this.#status.corruptChunks++
      this.#c.metrics?.corruptChunk(s.peer)
      this.#c.logger.warn({ digest: this.digest, provider: s.peer, chunk: i }, 'provider sent a corrupt chunk; banned for this transfer')
      this.#ban(s, `sent a corrupt chunk ${i}`)
      this.#fill()
      return
    }
    this.#writing.add(i)
    this.#fill()
    try {
      const fh = await this.#c.store.handle(this.digest)
      await fh.writev(parts, start)
    } catch (err: any) {
      this.#writing.delete(i)
      this.#finish?.reject(err)
      return
    }
    this.#writing.delete(i)
    this.#have[i] = 1
    this.#count++
    this.#lastProgress = Date.now()
    this.#status.chunksHave = this.#count
    this.#status.bytesHave += size
    this.#status.fetchedChunks++
    s.status.chunks++
    s.status.bytes += size
    s.rate.add(size)
    this.#rate.add(size)
    this.#c.metrics?.chunkFetched(size)
    this.#persistSoon()
    this.#emit()
    if (this.#count === this.#have.length) this.#finish?.resolve()
    else if (client === s.client) this.#fill()
  }

  #fail (s: Session, err: any): void {
    if (s.status.state === 'banned') return
    this.#drop(s, 'failed', err?.message ?? String(err))
    s.retryAt = Date.now() + this.#retryMs
    this.#c.logger.debug({ digest: this.digest, provider: s.peer, err: err?.message }, 'bundle provider failed')
    this.#fill()
  }

  #ban (s: Session, why: string): void {
    this.#drop(s, 'banned', why)
  }

  #drop (s: Session, state: 'failed' | 'banned', error: string): void {
    for (const i of s.inflight.keys()) this.#requested[i]!--
    s.inflight.clear()
    s.bps = 0
    s.lastReplyAt = 0
    s.client?.abort(new Error(error))
    delete s.client
    delete s.bitmap
    s.haveAt = 0
    s.status = { ...s.status, state, error, complete: false }
  }

  #persistSoon (): void {
    if (this.#persistTimer != null) return
    this.#persistTimer = setTimeout(() => {
      this.#persistTimer = undefined
      void this.#persistNow()
    }, 250)
  }

  /** Flush written chunks to disk, then record them as held: never the other way round. */
  async #persistNow (): Promise<void> {
    clearTimeout(this.#persistTimer)
    this.#persistTimer = undefined
    const snapshot = Uint8Array.from(this.#have)
    const bitmap = new Uint8Array(Math.ceil(snapshot.length / 8))
    snapshot.forEach((v, i) => { if (v === 1) bitmap[i >> 3]! |= 1 << (i & 7) })
    this.#persisting = this.#persisting.then(async () => {
      await (await this.#c.store.handle(this.digest)).datasync()
      await this.#c.store.saveProgress(this.digest, bitmap)
    }).catch(err => {
      // a full disk was logged once by the disk guard; progress is saved again on the next chunk
      this.#c.logger[err?.code === 'ERR_DISK_FULL' ? 'debug' : 'warn']({ digest: this.digest, err: err.message }, 'saving transfer progress failed')
    })
    await this.#persisting
  }

  /** Which verified chunks this (partial) holder can serve. */
  held (): ArrayLike<boolean> {
    return Array.from(this.#have, v => v === 1)
  }

  #emit (): void {
    this.safeDispatchEvent('progress', { detail: this.status() })
  }
}
