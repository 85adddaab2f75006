import { LinkClosedError, ProbeTimeoutError } from '../../protocols/swim/link.ts'
import { frameCodec, type Gossip, type MemberRecord, type Reply, type Request } from '../../protocols/swim/wire.ts'
import { digest, bucketOf } from '../../protocols/swim-sync/index.ts'
import type { OutgoingRequest, SwimTransport, TransportHandler } from '../../node/membership/transport.ts'

/**
 * A simulated network for membership unit tests: every frame goes through
 * the real codec (so schema limits apply), with optional delay, loss,
 * partitions, killed nodes (connections refused, peers see a disconnect)
 * and frozen ones (nothing answers, as under SIGSTOP). The multi-process
 * tests use real libp2p.
 */
export class MemorySwimNetwork {
  readonly nodes = new Map<string, MemorySwimTransport>()
  /** one-way delay per frame, ms */
  delayMs = 1
  /** probability that a frame is lost */
  loss = 0
  readonly #cut = new Set<string>()
  /** frames and bytes sent, per node */
  readonly sent = new Map<string, { frames: number, bytes: number }>()

  transport (peerId: string): MemorySwimTransport {
    const t = new MemorySwimTransport(this, peerId)
    this.nodes.set(peerId, t)
    return t
  }

  /** Nothing passes between the two groups until `heal()`. */
  partition (a: string[], b: string[]): void {
    for (const x of a) for (const y of b) { this.#cut.add(`${x}|${y}`); this.#cut.add(`${y}|${x}`) }
    for (const x of a) for (const y of b) {
      this.nodes.get(x)?.handler?.onDisconnected(y)
      this.nodes.get(y)?.handler?.onDisconnected(x)
    }
  }

  heal (): void {
    const pairs = [...this.#cut].map(p => p.split('|') as [string, string])
    this.#cut.clear()
    for (const [x, y] of pairs) if (this.reachable(x, y)) this.nodes.get(x)?.handler?.onConnected(y, true)
  }

  /** A crash: its connections close, dials to it are refused. */
  kill (peerId: string): void {
    const t = this.nodes.get(peerId)
    if (t == null) return
    t.state = 'killed'
    for (const other of this.nodes.values()) if (other !== t && other.state === 'up') other.handler?.onDisconnected(peerId)
  }

  /** A stall: connections stay, nothing answers (SIGSTOP). */
  freeze (peerId: string): void {
    const t = this.nodes.get(peerId)
    if (t != null) t.state = 'frozen'
  }

  thaw (peerId: string): void {
    const t = this.nodes.get(peerId)
    if (t != null) t.state = 'up'
  }

  reachable (from: string, to: string): boolean {
    return !this.#cut.has(`${from}|${to}`) && this.nodes.get(to)?.state === 'up' && this.nodes.get(from)?.state === 'up' && this.nodes.get(to)?.handler != null
  }

  count (from: string, bytes: number): void {
    const s = this.sent.get(from) ?? { frames: 0, bytes: 0 }
    s.frames++
    s.bytes += bytes
    this.sent.set(from, s)
  }

  async deliver<T> (from: string, frame: Parameters<typeof frameCodec.encode>[0]): Promise<T> {
    const bytes = frameCodec.encode(frame)
    this.count(from, bytes.byteLength)
    await new Promise(resolve => setTimeout(resolve, this.delayMs))
    return frameCodec.decode(bytes) as T
  }
}

export class MemorySwimTransport implements SwimTransport {
  readonly #net: MemorySwimNetwork
  readonly peerId: string
  handler?: TransportHandler
  state: 'up' | 'killed' | 'frozen' = 'up'
  #seq = 0

  constructor (net: MemorySwimNetwork, peerId: string) {
    this.#net = net
    this.peerId = peerId
  }

  async start (handler: TransportHandler): Promise<void> {
    this.handler = handler
    // everyone up is connected to everyone: tell both sides
    for (const other of this.#net.nodes.values()) {
      if (other === this || other.handler == null || !this.#net.reachable(this.peerId, other.peerId)) continue
      other.handler.onConnected(this.peerId, false)
    }
  }

  async stop (): Promise<void> {
    this.handler = undefined
  }

  async request (peer: string, frame: OutgoingRequest, timeoutMs: number): Promise<Reply> {
    const remote = this.#net.nodes.get(peer)
    if (this.state !== 'up') throw new ProbeTimeoutError('we are not running')
    if (remote?.state === 'killed') throw new LinkClosedError('connection refused')
    const seq = ++this.#seq
    return await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new ProbeTimeoutError(`no reply within ${timeoutMs} ms`)) }, timeoutMs)
      void (async () => {
        if (!this.#net.reachable(this.peerId, peer) || Math.random() < this.#net.loss) return
        const request = await this.#net.deliver<Request>(this.peerId, { ...frame, seq } as Request)
        const reply = await remote?.handler?.onRequest(this.peerId, request, AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs))))
        if (reply == null || !this.#net.reachable(peer, this.peerId) || Math.random() < this.#net.loss) return
        const back = await this.#net.deliver<Reply>(peer, reply)
        // a frozen node reads nothing until it thaws
        if (this.state !== 'up') return
        clearTimeout(timer)
        resolve(back)
      })().catch(() => {})
    })
  }

  gossip (peer: string, frame: Gossip): void {
    if (!this.#net.reachable(this.peerId, peer) || Math.random() < this.#net.loss) return
    void this.#net.deliver<Gossip>(this.peerId, frame).then(g => {
      if (this.#net.reachable(this.peerId, peer)) this.#net.nodes.get(peer)?.handler?.onGossip(this.peerId, g)
    })
  }

  async pushPull (peer: string, records: MemberRecord[], timeoutMs: number): Promise<MemberRecord[]> {
    const remote = this.#net.nodes.get(peer)
    if (!this.#net.reachable(this.peerId, peer) || remote?.handler == null) {
      await new Promise(resolve => setTimeout(resolve, Math.min(timeoutMs, 50)))
      throw new ProbeTimeoutError('push-pull failed')
    }
    // the real exchange's outcome: each side gets the other's records in the buckets that differ
    const ours = digest(records)
    const theirRecords = remote.handler.records()
    const differing = new Set(digest(theirRecords).flatMap((d, i) => d === ours[i] ? [] : [i]))
    const count = (n: number): void => { this.#net.count(this.peerId, n) }
    count(JSON.stringify(ours).length)
    const mine = records.filter(r => differing.has(bucketOf(r.id)))
    count(JSON.stringify(mine).length)
    remote.handler.onPushPull(this.peerId, mine)
    return theirRecords.filter(r => differing.has(bucketOf(r.id)))
  }

  connected (peer: string): boolean {
    return this.#net.reachable(this.peerId, peer)
  }

  peers (): string[] {
    return [...this.#net.nodes.keys()].filter(p => p !== this.peerId && this.connected(p))
  }

  async link (peer: string): Promise<void> {
    if (!this.connected(peer)) throw new Error(`${peer} is unreachable`)
  }

  introduce (): void {}

  hangUp (): void {}
}
