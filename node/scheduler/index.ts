import { NodeControl } from './control.ts'
import { Election } from './election.ts'
import { Reconciler, type BundleFetcher, type InstanceController } from './reconciler.ts'
import { bundleVersion, resolveBundle } from './resolve.ts'
import { Scheduler } from './scheduler.ts'
import { LevelTermStore } from './terms.ts'
import { ZoneSummaryWriter, type ZoneSummaryInit } from './zone-summary.ts'
import type { ParseOptions } from './spec.ts'
import type { SchedulingView } from '../api/routes/deployments.ts'
import type { Membership } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { Database } from '../store/db.ts'
import type { PeerId, Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface SchedulingComponents {
  peerId: PeerId
  role: string
  /** this node's labels as peers believe them (its certificate's, else the config's), read at start */
  labels: () => Record<string, string> | undefined
  registry: Registry
  membership: Pick<Membership, 'members' | 'addEventListener' | 'removeEventListener'>
  db: Database
  bundles: BundleFetcher
  runtime: InstanceController
  logger: Logger
  /** re-write `node/<self>` after a drain or eviction */
  announce: () => Promise<void>
  /** Lifeguard-style local health from membership, when it has one: an unhealthy node claims nothing */
  localHealth?: () => { healthy: boolean }
  parseOptions?: ParseOptions
  /** this node has peers to join (bootstrap or mDNS): the election waits to meet one before claiming */
  expectPeers?: boolean
  metrics?: { invalidDeployment(): void, placementWritten(): void }
}

/** The `scheduler` part of the node config. */
export interface SchedulingInit {
  /** How long a scheduler's claim holds after each renewal. @default 3000 */
  leaseMs?: number
  /** The scheduler renews its claim this often. @default 500 */
  renewIntervalMs?: number
  /** A placed node with no instance pulling, starting or running after this long is placed around. @default 60 */
  progressDeadlineSec?: number
  /** The zone's summary for other zones, kept by its scheduler (the `zones` part of the config). */
  summary?: ZoneSummaryInit
}

/**
 * Everything that runs deployments without a controller: the per-zone
 * election, the scheduler (active only while elected), this node's
 * reconciler, and the operator's drain/evict state.
 */
export class Scheduling implements Startable {
  readonly election: Election
  readonly scheduler: Scheduler
  readonly reconciler: Reconciler
  readonly control: NodeControl
  /** `zone/<zone>/<self>` while this node schedules its zone */
  readonly summary: ZoneSummaryWriter
  readonly parseOptions: ParseOptions

  constructor (c: SchedulingComponents, init: SchedulingInit = {}) {
    this.parseOptions = c.parseOptions ?? {}
    this.control = new NodeControl(c.db, c.announce)
    this.election = new Election({
      peerId: c.peerId,
      registry: c.registry,
      membership: c.membership,
      labels: c.labels,
      logger: c.logger.child({ service: 'election' }),
      store: new LevelTermStore(c.db),
      ...(c.localHealth == null ? {} : { localHealth: c.localHealth })
    }, {
      eligible: c.role !== 'coordinator',
      ...(c.expectPeers === true ? { joinMs: 30_000 } : {}),
      ...(init.leaseMs == null ? {} : { leaseMs: init.leaseMs }),
      ...(init.renewIntervalMs == null ? {} : { renewIntervalMs: init.renewIntervalMs })
    })
    this.scheduler = new Scheduler({
      peerId: c.peerId,
      registry: c.registry,
      membership: c.membership,
      election: this.election,
      resolveBundle: model => resolveBundle(c.registry, model),
      bundleVersion: digest => bundleVersion(c.registry, digest),
      logger: c.logger.child({ service: 'scheduler' }),
      parseOptions: this.parseOptions,
      ...(c.metrics == null ? {} : { metrics: c.metrics })
    }, { progress: { deadlineMs: (init.progressDeadlineSec ?? 60) * 1000 } })
    this.reconciler = new Reconciler({
      peerId: c.peerId,
      registry: c.registry,
      runtime: c.runtime,
      bundles: c.bundles,
      placements: this.election,
      logger: c.logger.child({ service: 'reconciler' }),
      parseOptions: this.parseOptions
    })
    this.summary = new ZoneSummaryWriter({
      peerId: c.peerId.toString(),
      registry: c.registry,
      members: () => c.membership.members(),
      election: this.election,
      logger: c.logger.child({ service: 'scheduler' })
    }, init.summary)
    // a leader change means other placements count: act on them at once
    this.election.addEventListener('leader:change', () => {
      this.scheduler.kick()
      this.reconciler.kick()
    })
  }

  /** Drain/evict state to put in `node/<self>`. */
  nodeFields (): { drained: boolean, excluded: string[] } {
    return this.control.state
  }

  view (): SchedulingView {
    return { election: this.election, control: this.control, parseOptions: this.parseOptions }
  }

  /** Call `control.load()` before the first announce; start() runs the rest. */
  async start (): Promise<void> {
    await this.election.start()
    await this.scheduler.start()
    await this.reconciler.start()
    await this.summary.start()
  }

  async stop (): Promise<void> {
    await this.summary.stop()
    await this.reconciler.stop()
    await this.scheduler.stop()
    await this.election.stop()
  }
}
