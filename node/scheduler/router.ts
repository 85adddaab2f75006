import { peerIdFromString } from '@libp2p/peer-id'
import { OverloadedError } from '../../protocols/errors.ts'
import { answerPredict, bodyLimitFor, DEFAULT_MAX_PREDICT_BYTES, encodePredictBody, forwardPredict, PREDICT_PROTOCOL, PREDICT_PROTOCOL_2_0, REPLY_LIMIT_FACTOR, type PredictAnswer, type PredictReply } from '../../protocols/predict/index.ts'
import { errorReply } from '../api/errors.ts'
import { ModelLoadingError } from '../runtime/errors.ts'
import { answerLocal } from '../runtime/serving.ts'
import { winningPlacement, type PlacementAuthority } from './placements.ts'
import { instanceName, readDeployments } from './scheduler.ts'
import type { Member } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { Runtime } from '../runtime/runtime.ts'
import type { Connection, PeerId, Startable, Stream, StreamHandler } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface RouterComponents {
  peerId: PeerId
  /** `keepsZoneOf`: whether this node holds `peer`'s instance entries (its zone); without it, every node's */
  registry: Pick<Registry, 'list' | 'value'> & Partial<Pick<Registry, 'keepsZoneOf'>>
  membership: { members(): readonly Member[] }
  /** which schedulers' placements count (the election); without it every running instance is a replica */
  placements?: PlacementAuthority
  runtime: Pick<Runtime, 'get' | 'has'>
  network: {
    handle(protocol: string, handler: StreamHandler, options?: { maxInboundStreams?: number, maxOutboundStreams?: number }): Promise<void>
    unhandle(protocol: string): Promise<void>
    dialProtocol(peer: PeerId, protocols: string | string[], options?: { signal?: AbortSignal }): Promise<Stream>
  }
  logger: Logger
  metrics?: { forwarded(outcome: 'ok' | 'retry' | 'failed'): void }
}

export interface RouterInit {
  /** Distinct replicas tried before giving up. @default 3 */
  attempts?: number
  /** Per forwarded request, plus a second per MiB of body. @default 10_000 */
  timeoutMs?: number
  /** The predict body limit (config `api.maxPredictBytes`), here as at the HTTP edge. @default DEFAULT_MAX_PREDICT_BYTES */
  maxBodyBytes?: number
  /** Bytes of forwarded request bodies answered at once; past it a request is refused (503) and goes to another replica. @default 4 × maxBodyBytes */
  maxInboundBytes?: number
}

/** How long a predict waits for a replica to look alive again before answering that there is none. */
const SETTLE_MS = 2000

/** 5xx answers that another replica would give the same way: relayed, not retried. */
const FINAL_CODES = new Set(['ERR_REPLY_TOO_LARGE'])

interface Replica {
  peerId: string
  cpuPct: number
  version?: string
  /** placed in a zone whose instance entries this node does not keep: its state is not known here */
  unknown?: true
}

/** TF Serving's model status for a model that runs elsewhere, plus where. */
export interface MeshModelStatus {
  model_version_status: Array<{ version: string, state: 'AVAILABLE' | 'LOADING', status: { error_code: 'OK', error_message: '' } }>
  replicas: Array<{ node: string, version?: string }>
}

class NoReplicaError extends Error {
  readonly code = 'ERR_NO_REPLICA'
  override readonly name = 'NoReplicaError'
}

/**
 * Load-balanced predict across the mesh. A request for a model this node
 * does not run goes to a replica chosen by the power of two choices over
 * observed latency and reported CPU, and on failure to another replica, so
 * a replica dying mid-stream costs a retry, not an error.
 */
export class PredictRouter implements Startable {
  readonly #c: RouterComponents
  readonly #self: string
  readonly #attempts: number
  readonly #timeoutMs: number
  readonly #maxBodyBytes: number
  readonly #maxInboundBytes: number
  #inboundBytes = 0
  /** exponentially weighted latency per peer, ms */
  readonly #latency = new Map<string, number>()
  /** peers that just failed, until when */
  readonly #penalty = new Map<string, number>()
  #specs?: { stamp: string, specs: ReturnType<typeof readDeployments> }

  constructor (components: RouterComponents, init: RouterInit = {}) {
    this.#c = components
    this.#self = components.peerId.toString()
    this.#attempts = init.attempts ?? 3
    this.#timeoutMs = init.timeoutMs ?? 10_000
    this.#maxBodyBytes = init.maxBodyBytes ?? DEFAULT_MAX_PREDICT_BYTES
    this.#maxInboundBytes = init.maxInboundBytes ?? 4 * this.#maxBodyBytes
  }

  /** The predict body limit this router forwards and answers with. */
  get maxBodyBytes (): number {
    return this.#maxBodyBytes
  }

  async start (): Promise<void> {
    for (const protocol of [PREDICT_PROTOCOL, PREDICT_PROTOCOL_2_0]) await this.#c.network.handle(protocol, this.#answer, { maxInboundStreams: 256, maxOutboundStreams: 256 })
  }

  async stop (): Promise<void> {
    for (const protocol of [PREDICT_PROTOCOL, PREDICT_PROTOCOL_2_0]) await this.#c.network.unhandle(protocol)
  }

  /**
   * Running replicas of `model` on other live nodes (`starting`: those still
   * loading it): the first non-empty group of `#candidates`.
   */
  replicas (model: string, state: 'running' | 'starting' = 'running'): Replica[] {
    return this.#candidates(model, state).find(group => group.length > 0) ?? []
  }

  /**
   * Where `model` may be answered, best group first.
   *
   * Known replicas are instance entries of the zones this node keeps (its
   * own; a coordinator's, every zone): an instance that says it runs for a
   * deployment counts only where that deployment's valid placement puts it,
   * so a node cannot draw a deployment's requests by announcing an instance
   * nobody placed there. Nodes of other zones keep their instance entries in
   * their zone, so a node there that the fleet-wide placement of a
   * deployment serving `model` names is a replica of unknown state (when
   * asked for running ones): tried after the known ones, and a 404 or a
   * failure there costs a retry like any other.
   *
   * Groups, in order: known replicas on alive nodes, placed nodes of other
   * zones that are alive, then the same two on suspect nodes. A suspect is
   * most likely alive (its probes were late: it, or this node, was busy),
   * and trying it, with the forward's own timeout and the next replica
   * after it, beats answering that there is none.
   */
  #candidates (model: string, state: 'running' | 'starting'): Replica[][] {
    const members = new Map(this.#c.membership.members().map(m => [m.peerId, m]))
    const placed = new Map<string, string[] | undefined>()
    const placedOn = (deployment: string): string[] | undefined => {
      if (!placed.has(deployment)) placed.set(deployment, this.#placedOn(deployment))
      return placed.get(deployment)
    }
    const alive: Replica[] = []
    const suspect: Replica[] = []
    for (const e of this.#c.registry.list<{ state?: string, version?: string, deployment?: unknown }>('instance/')) {
      const [, peer, name] = e.key.split('/')
      if (name !== model || peer == null || peer === this.#self || e.value?.state !== state) continue
      const m = members.get(peer)
      if (m?.state !== 'alive' && m?.state !== 'suspect') continue
      if (typeof e.value.deployment === 'string' && placedOn(e.value.deployment)?.includes(peer) === false) continue
      const replica = { peerId: peer, cpuPct: m.health?.cpuPct ?? 0, ...(e.value.version == null ? {} : { version: e.value.version }) }
      if (m.state === 'alive') alive.push(replica)
      else suspect.push(replica)
    }
    const elsewhereAlive: Replica[] = []
    const elsewhereSuspect: Replica[] = []
    if (state === 'running') {
      const seen = new Set([...alive, ...suspect].map(r => r.peerId))
      for (const peer of this.#placedElsewhere(model, placedOn)) {
        const m = members.get(peer)
        if (seen.has(peer) || (m?.state !== 'alive' && m?.state !== 'suspect')) continue
        seen.add(peer)
        const replica: Replica = { peerId: peer, cpuPct: m.health?.cpuPct ?? 0, unknown: true };
        (m.state === 'alive' ? elsewhereAlive : elsewhereSuspect).push(replica)
      }
    }
    return [alive, elsewhereAlive, suspect, elsewhereSuspect]
  }

  /**
   * Nodes the valid placements of deployments serving `model` name, in
   * zones whose instance entries this node does not keep. Deployments and
   * placements are fleet-wide; only a node's own zone knows what its
   * instances are doing.
   */
  #placedElsewhere (model: string, placedOn: (deployment: string) => string[] | undefined): string[] {
    const keeps = this.#c.registry.keepsZoneOf
    if (keeps == null || this.#c.placements == null) return []
    const out: string[] = []
    for (const [id, { spec }] of this.#deployments()) {
      if (instanceName(spec) !== model) continue
      for (const peer of placedOn(id) ?? []) if (peer !== this.#self && !keeps.call(this.#c.registry, peer)) out.push(peer)
    }
    return out
  }

  /** The nodes `deployment`'s valid placement names; undefined without an election to say which placements count. */
  #placedOn (deployment: string): string[] | undefined {
    return this.#c.placements == null ? undefined : winningPlacement(this.#c.registry, deployment, this.#c.placements)?.nodes
  }

  /** Deployment specs, parsed once per version of the `deployment/` entries (a predict must not re-validate them all). */
  #deployments (): ReturnType<typeof readDeployments> {
    const entries = this.#c.registry.list('deployment/')
    const stamp = entries.map(e => `${e.key}@${e.ts.join('.')}`).join(',')
    if (this.#specs?.stamp !== stamp) this.#specs = { stamp, specs: readDeployments({ list: () => entries } as unknown as Pick<Registry, 'list'>) }
    return this.#specs.specs
  }

  /** TF Serving's status of a model that runs elsewhere: AVAILABLE once a replica runs, LOADING while they only load it. */
  status (model: string): MeshModelStatus | undefined {
    const running = this.replicas(model)
    const loading = this.replicas(model, 'starting')
    if (running.length === 0 && loading.length === 0) return undefined
    const available = new Set(running.map(r => r.version ?? '1'))
    const versions = [...new Set([...available, ...loading.map(r => r.version ?? '1')])]
    return {
      model_version_status: versions.map(version => ({ version, state: available.has(version) ? 'AVAILABLE' : 'LOADING', status: { error_code: 'OK', error_message: '' } })),
      replicas: running.map(r => ({ node: r.peerId, ...(r.version == null ? {} : { version: r.version }) }))
    }
  }

  /**
   * Send a request to a replica and relay its answer: a predict in TF
   * Serving's REST JSON, or (`answer`) typed tensors or the model's
   * signature for the gRPC API. `requestId` (see requestIdAt) goes along
   * unchanged to every replica tried, so the actions their rules fire carry
   * the same idempotency keys and a receiver keeps one.
   */
  async predict (model: string, version: string | undefined, body: unknown, answer?: PredictAnswer, requestId?: string): Promise<PredictReply> {
    // a body past the limit is the caller's error, answered here: no replica sees it or is blamed for it
    let bytes: Uint8Array
    try {
      bytes = encodePredictBody(body, bodyLimitFor(answer, this.#maxBodyBytes))
    } catch (err: any) {
      return errorReply(err)
    }
    await this.#settle(model, version)
    const tried = new Set<string>()
    let last: unknown
    for (let attempt = 0; attempt < this.#attempts; attempt++) {
      // the best group with a replica not tried yet: a known replica in this zone failing falls over to the others
      const untried = this.#candidates(model, 'running').map(group => group.filter(r => !tried.has(r.peerId) && (version == null || r.version === version || r.unknown === true)))
      const replica = this.#choose(untried.find(group => group.length > 0) ?? [])
      if (replica == null) break
      tried.add(replica.peerId)
      const started = performance.now()
      try {
        const stream = await this.#c.network.dialProtocol(peerIdFromString(replica.peerId), [PREDICT_PROTOCOL, PREDICT_PROTOCOL_2_0], { signal: AbortSignal.timeout(this.#timeoutMs) })
        const request = { model, ...(version == null ? {} : { version }), body: bytes, ...(answer == null ? {} : { answer }), ...(requestId == null ? {} : { requestId }) }
        const reply = await forwardPredict(stream, request, { timeoutMs: this.#timeoutMs, maxReplyBytes: REPLY_LIMIT_FACTOR * this.#maxBodyBytes, protocol: stream.protocol })
        this.#observe(replica.peerId, performance.now() - started)
        // the replica stopped serving it (404) or failed (5xx): another may succeed
        if ((reply.status === 404 || reply.status >= 500) && !FINAL_CODES.has(codeOf(reply.body))) {
          last = reply
          this.#penalise(replica.peerId)
          this.#c.metrics?.forwarded('retry')
          continue
        }
        this.#c.metrics?.forwarded('ok')
        return reply
      } catch (err) {
        last = err
        this.#penalise(replica.peerId)
        this.#c.metrics?.forwarded('retry')
        this.#c.logger.debug({ model, peer: replica.peerId, err: (err as Error).message }, 'forwarded predict failed; trying another replica')
      }
    }
    this.#c.metrics?.forwarded('failed')
    if (last != null && typeof last === 'object' && 'status' in last) return last as PredictReply
    // nothing runs it yet, but replicas are loading it: ask again shortly
    if (tried.size === 0 && this.replicas(model, 'starting').some(r => version == null || r.version === version)) {
      return errorReply(new ModelLoadingError(`model ${model} is loading on ${this.replicas(model, 'starting').length} node(s); try again shortly`, 1))
    }
    const { status, body: errBody } = errorReply(tried.size === 0
      ? Object.assign(new Error(`model ${model} is not deployed anywhere in the mesh`), { code: 'ERR_NOT_FOUND' })
      : new NoReplicaError(`no replica of ${model} answered (${tried.size} tried)`))
    return { status, body: errBody }
  }

  /**
   * With no live replica in sight, wait a moment before answering that there
   * is none: a large body just parsed or encoded can stall this process for
   * longer than a heartbeat interval, and until the heartbeats that queued up
   * meanwhile are read, every peer looks silent.
   */
  async #settle (model: string, version: string | undefined): Promise<void> {
    const deadline = performance.now() + SETTLE_MS
    while (!this.replicas(model).some(r => version == null || r.version === version || r.unknown === true) && performance.now() < deadline) {
      // a model that runs nowhere at all is a 404 at once
      const recorded = this.#c.registry.list<{ state?: string }>('instance/').some(e => {
        const [, peer, name] = e.key.split('/')
        return name === model && peer !== this.#self && e.value?.state === 'running'
      })
      if (!recorded && this.#placedElsewhere(model, id => this.#placedOn(id)).length === 0) return
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  #choose (replicas: Replica[]): Replica | undefined {
    if (replicas.length <= 1) return replicas[0]
    const now = performance.now()
    const cost = (r: Replica): number => (this.#latency.get(r.peerId) ?? 5) * (1 + r.cpuPct / 100) + ((this.#penalty.get(r.peerId) ?? 0) > now ? 10_000 : 0)
    const a = replicas[Math.floor(Math.random() * replicas.length)]!
    let b = replicas[Math.floor(Math.random() * replicas.length)]!
    if (b === a) b = replicas[(replicas.indexOf(a) + 1) % replicas.length]!
    return cost(a) <= cost(b) ? a : b
  }

  #observe (peer: string, ms: number): void {
    const previous = this.#latency.get(peer)
    this.#latency.set(peer, previous == null ? ms : previous * 0.8 + ms * 0.2)
  }

  #penalise (peer: string): void {
    this.#penalty.set(peer, performance.now() + 5000)
  }

  /** Hold `bytes` of an inbound body, within the budget. */
  readonly #admit = (bytes: number): (() => void) | Error => {
    if (this.#inboundBytes > 0 && this.#inboundBytes + bytes > this.#maxInboundBytes) {
      return new OverloadedError(`this node is answering ${this.#inboundBytes} bytes of forwarded predicts; another ${bytes} exceed its budget of ${this.#maxInboundBytes}`)
    }
    this.#inboundBytes += bytes
    let held = true
    return () => {
      if (held) this.#inboundBytes -= bytes
      held = false
    }
  }

  /** Another node forwards a request: answer only from a local instance, never forward again. */
  readonly #answer = async (stream: Stream, _connection: Connection): Promise<void> => {
    await answerPredict(stream, async (model, version, body, answer, requestId) => {
      try {
        return { status: 200, body: await answerLocal(this.#c.runtime, model, version, body, answer, requestId) }
      } catch (err: any) {
        return errorReply(err)
      }
    }, { timeoutMs: this.#timeoutMs, maxBodyBytes: this.#maxBodyBytes, admit: this.#admit, refuse: err => errorReply(err) }).catch(err => {
      this.#c.logger.debug({ err: err.message }, 'answering a forwarded predict failed')
    })
  }
}

function codeOf (body: unknown): string {
  const code = (body as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}
