import type { LocalHealthState } from './awareness.ts'
import type { SelfClock } from './clock.ts'
import type { HealthRecord } from './health.ts'
import type { IncarnationStore } from './incarnation.ts'
import type { ProbeResult } from './prober.ts'
import type { MemberState } from './table.ts'
import type { SwimTransport } from './transport.ts'
import type { NodeClaims, Role } from '../identity/certificate.ts'
import type { Registry } from '../registry/registry.ts'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface Member {
  peerId: string
  self: boolean
  /** from the member's certificate, never from what it writes about itself */
  role?: Role
  labels: Record<string, string>
  addresses: string[]
  state: MemberState
  /** ms since we last heard from it directly (probe, ack, any frame); null if never */
  lastSeenMs: number | null
  /** wall-clock ms when the state last changed */
  since: number
  /** its latest health report (written on change), if any */
  health?: HealthRecord
  /** the incarnation of its latest alive claim; null before we have one */
  incarnation?: number | null
  /** its wall clock minus ours, from probe round trips (for ourselves: ours minus the fleet's) */
  clockOffsetMs?: number | null
  /** its clock is off past `clockSkewLimitMs` (for ourselves: most peers disagree with us) */
  clockSkewed?: boolean
}

export interface MembershipEvents {
  'member:state': CustomEvent<{ peerId: string, state: MemberState, previous: MemberState | undefined }>
  /** this node's Lifeguard health flipped between healthy and not */
  'health:local': CustomEvent<LocalHealthState>
  /** this node's clock started or stopped disagreeing with most peers */
  'clock:skew': CustomEvent<SelfClock>
}

export interface MembershipMetrics {
  members(counts: Record<MemberState, number>): void
  probe(result: ProbeResult): void
  localHealth(score: number): void
  clockSelf(clock: SelfClock): void
  recordMismatch(field: 'role' | 'labels'): void
  rejected(reason: string): void
}

/** What membership needs from fleet trust: who holds a valid, unrevoked certificate. */
export interface MemberTrust {
  claimsFor(peerId: string): NodeClaims | undefined
  isDenied(peerId: string): boolean
  /** Verify a certificate found in a `node/<peerId>` record and remember it. */
  learnCertificate(cert: string, peerId: string): Promise<NodeClaims>
}

export interface MembershipComponents {
  peerId: PeerId
  privateKey: PrivateKey
  registry: Pick<Registry, 'list' | 'value' | 'onChange'>
  trust: MemberTrust
  transport: SwimTransport
  /** our multiaddrs, signed into our alive claim */
  addresses(): string[]
  logger: Logger
  metrics?: MembershipMetrics
  incarnations?: IncarnationStore
}

export interface MembershipInit {
  /** Probe one member this often. @default 1000 */
  probeIntervalMs?: number
  /** Wait this long for a direct ack before asking others. @default 500 */
  probeTimeoutMs?: number
  /** Members asked to probe indirectly. @default 3 */
  indirectChecks?: number
  /**
   * Probe only this many successors on a ring of members ordered by a hash
   * of their ids (ring.ts): probes go over held connections. 0: every
   * member, in a shuffled round robin (SWIM's order). @default 3
   */
  probeSuccessors?: number
  /** Suspicion lasts at least mult · max(1, log10 N) probe intervals. @default 1 */
  suspicionMult?: number
  /** … and at most this many times that, without confirmations. @default 6 */
  suspicionMaxMult?: number
  /** Independent confirmations that bring suspicion down to its minimum. @default 3 */
  suspicionConfirmations?: number
  /** A change is piggybacked mult · ⌈log10(N + 1)⌉ times. @default 4 */
  retransmitMult?: number
  /** Gossip pending changes this often … @default 200 */
  gossipIntervalMs?: number
  /** … to this many connected members. @default 3 */
  gossipNodes?: number
  /** Full state exchange with one member this often (scaled up past 32 members). @default 30000 */
  pushPullIntervalMs?: number
  /** Lifeguard: timeouts stretch up to this many times while this node is unhealthy. @default 8 */
  awarenessMaxMultiplier?: number
  /** A clock further off than this is skewed. @default 15000 */
  clockSkewLimitMs?: number
  /**
   * Timers this late mean this process stalled (SIGSTOP, starved of CPU);
   * shorter delays show up as missed acks and nacks instead. @default 2 · probeIntervalMs
   */
  stallThresholdMs?: number
  /** @default performance.now */
  monotonic?: () => number
}

export const DEFAULT_PROBE_INTERVAL_MS = 1000
