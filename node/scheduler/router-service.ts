import { serviceCapabilities, serviceDependencies, type Startable } from '@libp2p/interface'
import { ServiceLifecycle, type Ordered } from '../mesh/lifecycle.ts'
import { meshNetwork, type MeshComponents } from '../mesh/network.ts'
import { capability, dependencies } from '../mesh/part.ts'
import { PredictRouter, type RouterComponents, type RouterInit } from './router.ts'
import type { MembershipService } from '../membership/service.ts'
import type { RegistryService } from '../registry/service.ts'
import type { SchedulingService } from './service.ts'

export interface RouterServiceInit extends RouterInit, Pick<RouterComponents, 'runtime' | 'logger' | 'metrics'> {
  /** Services that must have started first, beyond the registry and membership (the agent's local runtime). @default [] */
  after?: string[]
}

export interface RouterServiceComponents extends MeshComponents {
  registry: RegistryService
  membership: MembershipService
  scheduling: SchedulingService
}

/**
 * Predict forwarding as a libp2p service, over the node's connection
 * manager. Built after `scheduling` in `services`: the election's
 * placements decide which replicas count.
 */
export function predictRouter (init: RouterServiceInit): (components: RouterServiceComponents) => RouterService {
  return components => new RouterService(components, init)
}

/** Answers forwarded predicts from `afterStart`, once membership knows the replicas and the local runtime runs. */
export class RouterService extends PredictRouter implements Startable, Ordered {
  readonly lifecycle: ServiceLifecycle
  readonly [serviceCapabilities]: string[] = [capability('router')]
  readonly [serviceDependencies]: string[]
  readonly [Symbol.toStringTag] = capability('router')

  constructor (components: RouterServiceComponents, init: RouterServiceInit) {
    const { runtime, logger, metrics, after = [], ...options } = init
    super({
      peerId: components.peerId,
      registry: components.registry,
      membership: components.membership,
      placements: components.scheduling.election,
      runtime,
      network: meshNetwork(components),
      logger,
      ...(metrics == null ? {} : { metrics })
    }, options)
    const deps = ['registry', 'membership', ...after]
    this[serviceDependencies] = deps.map(capability)
    this.lifecycle = new ServiceLifecycle('router', () => dependencies(components, deps))
  }

  async beforeStart (): Promise<void> { await this.lifecycle.run('beforeStart', () => {}) }
  override async start (): Promise<void> { await this.lifecycle.run('start', () => {}) }
  async afterStart (): Promise<void> { await this.lifecycle.run('afterStart', async () => { await super.start() }) }
  async beforeStop (): Promise<void> { await this.lifecycle.stop(async ran => { if (ran.has('afterStart')) await super.stop() }) }
  override async stop (): Promise<void> {}
}
