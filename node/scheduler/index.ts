import { NodeControl } from './control.ts'
import { Election } from './election.ts'
import { Reconciler, type BundleFetcher, type InstanceController } from './reconciler.ts'
import { resolveBundle } from './resolve.ts'
import { Scheduler } from './scheduler.ts'
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
  labels: Record<string, string>
  registry: Registry
  membership: Membership
  db: Database
  bundles: BundleFetcher
  runtime: InstanceController
  logger: Logger
  /** re-write `node/<self>` after a drain or eviction */
  announce: () => Promise<void>
  parseOptions?: ParseOptions
  /** this node has peers to join (bootstrap or mDNS): the election waits to meet one before claiming */
  expectPeers?: boolean
  metrics?: { invalidDeployment(): void, placementWritten(): void }
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
  readonly parseOptions: ParseOptions

  constructor (c: SchedulingComponents) {
    this.parseOptions = c.parseOptions ?? {}
    this.control = new NodeControl(c.db, c.announce)
    this.election = new Election({
      peerId: c.peerId,
      registry: c.registry,
      membership: c.membership,
      logger: c.logger.child({ service: 'election' })
    }, { labels: c.labels, eligible: c.role !== 'coordinator', ...(c.expectPeers === true ? { joinMs: 30_000 } : {}) })
    this.scheduler = new Scheduler({
      peerId: c.peerId,
      registry: c.registry,
      membership: c.membership,
      election: this.election,
      resolveBundle: model => resolveBundle(c.registry, model),
      logger: c.logger.child({ service: 'scheduler' }),
      parseOptions: this.parseOptions,
      ...(c.metrics == null ? {} : { metrics: c.metrics })
    })
    this.reconciler = new Reconciler({
      peerId: c.peerId,
      registry: c.registry,
      runtime: c.runtime,
      bundles: c.bundles,
      logger: c.logger.child({ service: 'reconciler' }),
      parseOptions: this.parseOptions
    })
    // a leader change means new placements: act on them at once
    this.election.addEventListener('leader:change', () => { this.scheduler.kick() })
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
  }

  async stop (): Promise<void> {
    await this.reconciler.stop()
    await this.scheduler.stop()
    await this.election.stop()
  }
}
