import { serviceCapabilities, serviceDependencies, type Startable } from '@libp2p/interface'
import { ServiceLifecycle, type Ordered, type StartPhase } from './lifecycle.ts'

/** The capability a gatemesh service named `name` provides (its key in the node's `services`). */
export function capability (name: string): string {
  return `@gatemesh/${name}`
}

export interface ServicePartInit<T extends Startable, C> {
  /** its key in the node's `services` */
  name: string
  /** keys of the services that must have started (and will stop after it) */
  after: string[]
  /** build the part from the node's components (and the services declared before it) */
  create: (components: C) => T
  /** what starting it means, when more than `part.start()` */
  start?: (part: T) => Promise<void>
  /** the libp2p phase it starts in. @default 'afterStart' */
  phase?: StartPhase
}

/**
 * One of the agent's own parts (the local runtime, bundles, health,
 * releases, ...) taking its place in the node's `services`, so that libp2p
 * starts it with the mesh, in order, and stops it on a failed start.
 * The part itself is `part`.
 */
export class ServicePart<T extends Startable> implements Startable, Ordered {
  readonly part: T
  readonly lifecycle: ServiceLifecycle
  readonly [serviceCapabilities]: string[]
  readonly [serviceDependencies]: string[]
  readonly [Symbol.toStringTag]: string = ''
  readonly #phase: StartPhase
  readonly #start: (part: T) => Promise<void>

  constructor (part: T, init: Omit<ServicePartInit<T, unknown>, 'create'>, dependencies: () => Ordered[]) {
    this.part = part
    this.lifecycle = new ServiceLifecycle(init.name, dependencies)
    this[serviceCapabilities] = [capability(init.name)]
    this[serviceDependencies] = init.after.map(capability)
    this[Symbol.toStringTag] = capability(init.name)
    this.#phase = init.phase ?? 'afterStart'
    this.#start = init.start ?? (async part => { await part.start() })
  }

  async beforeStart (): Promise<void> { await this.#run('beforeStart') }
  async start (): Promise<void> { await this.#run('start') }
  async afterStart (): Promise<void> { await this.#run('afterStart') }

  async beforeStop (): Promise<void> {
    await this.lifecycle.stop(async ran => { if (ran.has(this.#phase)) await this.part.stop() })
  }

  async stop (): Promise<void> {}

  async #run (phase: StartPhase): Promise<void> {
    await this.lifecycle.run(phase, async () => { if (phase === this.#phase) await this.#start(this.part) })
  }
}

export function servicePart<T extends Startable, C extends object> (init: ServicePartInit<T, C>): (components: C) => ServicePart<T> {
  return components => new ServicePart(init.create(components), init, () => dependencies(components, init.after))
}

/** The ordered services named `names`, read from the components when the node starts. */
export function dependencies (components: object, names: string[]): Ordered[] {
  return names.map(n => (components as Record<string, Ordered>)[n] as Ordered)
}
