import { TypedEventEmitter } from '@libp2p/interface'
import type { HealthSample } from './health.ts'
import type { RegistryChange } from '../registry/watch.ts'
import type { Registry } from '../registry/registry.ts'
import type { Role } from '../identity/certificate.ts'
import type { PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export type MemberState = 'alive' | 'suspect' | 'dead'

/** A node's self-description under `node/<peerId>`. */
export interface NodeRecord {
  role: Role
  labels: Record<string, string>
  addresses: string[]
  sensors: Array<{ id: string, type: string, measures?: string, unit?: string, geo?: unknown }>
  backend: string | null
  version: string
  /** the node certificate, so peers that never met it can verify its writes */
  cert: string
  startedAt: number
  /** this node's local HTTP API (TF Serving predict), once it listens */
  api?: string
  /** an operator drained this node: no instances, no new placements */
  drained?: boolean
  /** deployments an operator stopped on this node */
  excluded?: string[]
}

/** What `health/<peerId>` holds: a health sample plus the sender's heartbeat interval. */
export interface HealthRecord extends HealthSample {
  intervalMs: number
  [extra: string]: unknown
}

export interface Member {
  peerId: string
  self: boolean
  role?: Role
  labels: Record<string, string>
  addresses: string[]
  state: MemberState
  /** ms since we last heard a heartbeat, null if never */
  lastSeenMs: number | null
  /** wall-clock ms when the state last changed */
  since: number
  health?: HealthRecord
  /** its clock disagrees with its peers' (set by membership's skew check): nothing is placed on it */
  clockSkewed?: boolean
}

export interface MembershipEvents {
  'member:state': CustomEvent<{ peerId: string, state: MemberState, previous: MemberState | undefined }>
}

export interface MembershipComponents {
  peerId: PeerId
  registry: Pick<Registry, 'set' | 'list' | 'value' | 'onChange'>
  sampler: { sample(): HealthSample }
  logger: Logger
  metrics?: { heartbeatAge: { set(labels: { peer: string }, v: number): void, remove(labels: { peer: string }): void }, members: { set(labels: { state: string }, v: number): void } }
  /** Extra fields for the heartbeat, e.g. instance counts. */
  extraHealth?: () => Record<string, unknown>
}

export interface MembershipInit {
  /** @default 1000 */
  heartbeatIntervalMs?: number
  /** Silent for (misses + ½) intervals → suspect. @default 1 */
  suspectAfterMisses?: number
  /** Silent for (misses + ½) intervals → dead. @default 2 */
  deadAfterMisses?: number
  /** Monotonic ms clock. @default performance.now */
  monotonic?: () => number
}

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1000
export const DEFAULT_SUSPECT_AFTER_MISSES = 1
export const DEFAULT_DEAD_AFTER_MISSES = 2

/**
 * Heartbeats and failure detection. Every node writes `health/<self>` each
 * interval; every node judges each peer by how long it has been silent on
 * its own monotonic clock, so clock skew between machines does not matter
 * and every node reaches the same verdict within one check period.
 */
export class Membership extends TypedEventEmitter<MembershipEvents> implements Startable {
  readonly #c: MembershipComponents
  readonly #self: string
  readonly #intervalMs: number
  readonly #suspectAfter: number
  readonly #deadAfter: number
  readonly #mono: () => number
  readonly #lastHeard = new Map<string, number>()
  readonly #states = new Map<string, { state: MemberState, since: number }>()
  #startedAt = 0
  #heartbeatTimer?: NodeJS.Timeout
  #checkTimer?: NodeJS.Timeout
  #off: Array<() => void> = []

  constructor (components: MembershipComponents, init: MembershipInit = {}) {
    super()
    this.#c = components
    this.#self = components.peerId.toString()
    this.#intervalMs = init.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS
    this.#suspectAfter = init.suspectAfterMisses ?? DEFAULT_SUSPECT_AFTER_MISSES
    this.#deadAfter = init.deadAfterMisses ?? DEFAULT_DEAD_AFTER_MISSES
    this.#mono = init.monotonic ?? (() => performance.now())
  }

  get heartbeatIntervalMs (): number {
    return this.#intervalMs
  }

  async start (): Promise<void> {
    this.#startedAt = this.#mono()
    this.#off.push(this.#c.registry.onChange('health/', this.#onHealth))
    await this.heartbeat()
    this.#heartbeatTimer = setInterval(() => {
      this.heartbeat().catch(err => { this.#c.logger.warn({ err: err.message }, 'heartbeat failed') })
    }, this.#intervalMs)
    this.#checkTimer = setInterval(() => { this.check() }, Math.max(50, Math.min(250, this.#intervalMs / 4)))
  }

  async stop (): Promise<void> {
    clearInterval(this.#heartbeatTimer)
    clearInterval(this.#checkTimer)
    for (const off of this.#off) off()
    this.#off = []
  }

  async heartbeat (): Promise<void> {
    const record: HealthRecord = { ...this.#c.sampler.sample(), intervalMs: this.#intervalMs, ...this.#c.extraHealth?.() }
    await this.#c.registry.set(`health/${this.#self}`, record)
  }

  /** Liveness of one peer right now. */
  stateOf (peerId: string): MemberState {
    if (peerId === this.#self) return 'alive'
    const interval = this.#c.registry.value<HealthRecord>(`health/${peerId}`)?.intervalMs ?? this.#intervalMs
    const silent = this.#mono() - (this.#lastHeard.get(peerId) ?? this.#startedAt)
    if (silent > (this.#deadAfter + 0.5) * interval) return 'dead'
    if (silent > (this.#suspectAfter + 0.5) * interval) return 'suspect'
    return this.#lastHeard.has(peerId) ? 'alive' : 'suspect'
  }

  /** Re-evaluate every peer and announce state changes. */
  check (): void {
    const counts: Record<MemberState, number> = { alive: 0, suspect: 0, dead: 0 }
    const now = Date.now()
    for (const { key } of this.#c.registry.list('node/')) {
      const peerId = key.slice(5)
      const state = this.stateOf(peerId)
      counts[state]++
      const previous = this.#states.get(peerId)
      if (previous?.state !== state) {
        this.#states.set(peerId, { state, since: now })
        if (previous != null || state !== 'suspect') {
          const log = state === 'dead' ? 'warn' : 'info'
          this.#c.logger[log]({ peer: peerId, state, previous: previous?.state }, `member ${state}`)
        }
        this.safeDispatchEvent('member:state', { detail: { peerId, state, previous: previous?.state } })
      }
      const heard = this.#lastHeard.get(peerId)
      if (heard != null && peerId !== this.#self) this.#c.metrics?.heartbeatAge.set({ peer: peerId }, (this.#mono() - heard) / 1000)
    }
    for (const [state, n] of Object.entries(counts)) this.#c.metrics?.members.set({ state }, n)
  }

  members (): Member[] {
    const mono = this.#mono()
    return this.#c.registry.list<NodeRecord>('node/').map(({ key, value }) => {
      const peerId = key.slice(5)
      const heard = this.#lastHeard.get(peerId)
      const member: Member = {
        peerId,
        self: peerId === this.#self,
        labels: value?.labels ?? {},
        addresses: value?.addresses ?? [],
        state: this.stateOf(peerId),
        lastSeenMs: peerId === this.#self ? 0 : heard == null ? null : Math.round(mono - heard),
        since: this.#states.get(peerId)?.since ?? Date.now()
      }
      if (value?.role != null) member.role = value.role
      const health = this.#c.registry.value<HealthRecord>(`health/${peerId}`)
      if (health != null) member.health = health
      return member
    })
  }

  readonly #onHealth = (change: RegistryChange): void => {
    const peerId = change.key.slice(7)
    if (peerId === this.#self || change.entry.deleted) return
    if (change.via === 'sync') {
      // anti-entropy hands over whatever was last written, however old: only
      // count it as a sign of life when it is recent by the writer's clock
      const interval = (change.entry.value as HealthRecord | undefined)?.intervalMs ?? this.#intervalMs
      if (Date.now() - change.entry.ts[0] > 2 * interval) return
    }
    this.#lastHeard.set(peerId, this.#mono())
  }
}
