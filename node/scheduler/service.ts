import { serviceCapabilities, serviceDependencies, type Startable } from '@libp2p/interface'
import { ServiceLifecycle, type Ordered } from '../mesh/lifecycle.ts'
import { capability, dependencies } from '../mesh/part.ts'
import { Scheduling, type SchedulingComponents, type SchedulingInit } from './index.ts'
import type { MembershipService } from '../membership/service.ts'
import type { RegistryService } from '../registry/service.ts'
import type { PeerId } from '@libp2p/interface'

export interface SchedulingServiceInit extends Omit<SchedulingComponents, 'peerId' | 'registry' | 'membership'> {
  /** the node config's `scheduler` part */
  scheduler?: SchedulingInit
  /**
   * Services that must have started first, beyond the registry and
   * membership (the agent's: the local runtime the reconciler runs
   * instances in, the bundles it pulls). @default []
   */
  after?: string[]
}

export interface SchedulingServiceComponents {
  peerId: PeerId
  registry: RegistryService
  membership: MembershipService
}

/**
 * Election, scheduler and reconciler as a libp2p service. Built after
 * `registry` and `membership` in `services`.
 */
export function scheduling (init: SchedulingServiceInit): (components: SchedulingServiceComponents) => SchedulingService {
  return components => new SchedulingService(components, init)
}

/**
 * Loads the operator's drain/evict state in `beforeStart` (a read of the
 * node's database), so that it is in the first `node/<self>` the agent
 * writes; starts the election, scheduler and reconciler in `afterStart`,
 * after membership (the election counts live members) and after the
 * services in `after`.
 */
export class SchedulingService extends Scheduling implements Startable, Ordered {
  readonly lifecycle: ServiceLifecycle
  readonly [serviceCapabilities]: string[] = [capability('scheduling')]
  readonly [serviceDependencies]: string[]
  readonly [Symbol.toStringTag] = capability('scheduling')

  constructor (components: SchedulingServiceComponents, init: SchedulingServiceInit) {
    const { scheduler, after = [], ...rest } = init
    super({ ...rest, peerId: components.peerId, registry: components.registry, membership: components.membership }, scheduler)
    const deps = ['registry', 'membership', ...after]
    this[serviceDependencies] = deps.map(capability)
    this.lifecycle = new ServiceLifecycle('scheduling', () => dependencies(components, deps))
  }

  async beforeStart (): Promise<void> { await this.lifecycle.run('beforeStart', async () => { await this.control.load() }) }
  override async start (): Promise<void> { await this.lifecycle.run('start', () => {}) }
  async afterStart (): Promise<void> { await this.lifecycle.run('afterStart', async () => { await super.start() }) }
  async beforeStop (): Promise<void> { await this.lifecycle.stop(async ran => { if (ran.has('afterStart')) await super.stop() }) }
  override async stop (): Promise<void> {}
}
