/**
 * Start and stop order for the agent's libp2p services.
 *
 * libp2p 3 (libp2p/dist/src/components.js) runs each lifecycle phase of all
 * components at once: `Promise.all` over every `beforeStart`, then every
 * `start`, then every `afterStart`, and the same for `beforeStop`, `stop`,
 * `afterStop`. `serviceDependencies` is only checked for presence when the
 * node is built; it orders nothing. When a start throws, libp2p calls
 * `stop()` on every component, including those whose start is still running.
 *
 * gatemesh's services need each other in order (the registry verifies
 * entries with the trust's own certificate, membership reads the registry),
 * so each one wraps its work in a `ServiceLifecycle`: within a phase it waits
 * for the same phase of the services it depends on, and on the way down it
 * waits for its own unfinished start and for every service that depends on
 * it to have stopped. A start that fails rejects the phases that wait for it,
 * so nothing after it starts and everything that did start is stopped.
 */

/** The phases a gatemesh service does work in. */
export type StartPhase = 'beforeStart' | 'start' | 'afterStart'

const PHASES: StartPhase[] = ['beforeStart', 'start', 'afterStart']

interface Deferred {
  promise: Promise<void>
  resolve: () => void
  reject: (err: unknown) => void
  settled: boolean
}

function deferred (): Deferred {
  const d: Partial<Deferred> = { settled: false }
  d.promise = new Promise<void>((resolve, reject) => {
    d.resolve = () => { d.settled = true; resolve() }
    d.reject = err => { d.settled = true; reject(err) }
  })
  // a phase nobody waits for must not become an unhandled rejection
  d.promise.catch(() => {})
  return d as Deferred
}

function freshPhases (): Map<StartPhase, Deferred> {
  return new Map(PHASES.map(p => [p, deferred()]))
}

/** A component that takes part in the ordering: every gatemesh service. */
export interface Ordered {
  readonly lifecycle: ServiceLifecycle
}

export class DependencyStartError extends Error {
  readonly code = 'ERR_DEPENDENCY_START'
  override readonly name = 'DependencyStartError'
}

/**
 * One service's place in the order. `dependencies` is read at start, when
 * libp2p has built every service (a service may depend on one declared
 * after it in `services`).
 */
export class ServiceLifecycle {
  readonly name: string
  readonly #dependencies: () => Ordered[]
  #phases = freshPhases()
  #stopped = deferred()
  /** phases whose work ran to the end: what stop has to undo */
  #ran = new Set<StartPhase>()
  #inflight = new Set<Promise<void>>()
  readonly #dependents = new Set<ServiceLifecycle>()

  constructor (name: string, dependencies: () => Ordered[]) {
    this.name = name
    this.#dependencies = dependencies
  }

  /** Run `work` in `phase` once the dependencies finished that phase. */
  async run (phase: StartPhase, work: () => Promise<void> | void): Promise<void> {
    // a start after a stop is a new cycle (the phases were renewed when it stopped)
    if (phase === 'beforeStart' && this.#stopped.settled) this.#stopped = deferred()
    const done = this.#phase(phase)
    const task = (async () => {
      const deps = this.#dependencies().map(d => d.lifecycle)
      for (const dep of deps) dep.#dependents.add(this)
      for (const dep of deps) {
        try {
          await dep.#phase(phase).promise
        } catch (err) {
          throw new DependencyStartError(`${this.name} not started: ${dep.name} failed to start`, { cause: err })
        }
      }
      await work()
      this.#ran.add(phase)
    })()
    this.#inflight.add(task)
    try {
      await task
      done.resolve()
    } catch (err) {
      done.reject(err)
      throw err
    } finally {
      this.#inflight.delete(task)
    }
  }

  /**
   * Stop after every unfinished start of this service settled and every
   * service that depends on this one stopped; `work` runs only when some
   * phase ran (a service that never started has nothing to undo).
   */
  async stop (work: (ran: ReadonlySet<StartPhase>) => Promise<void> | void): Promise<void> {
    await Promise.allSettled([...this.#inflight])
    // a phase that never began cannot begin any more: whoever waits on it gives up
    for (const p of PHASES) {
      const d = this.#phase(p)
      if (!d.settled) d.reject(new DependencyStartError(`${this.name} stopped before ${p}`))
    }
    await Promise.all([...this.#dependents].map(async d => { await d.#stopped.promise }))
    try {
      if (this.#ran.size > 0) await work(this.#ran)
    } finally {
      // whoever depended on this service has stopped: nobody waits on these phases any more
      this.#phases = freshPhases()
      this.#ran = new Set()
      this.#stopped.resolve()
    }
  }

  #phase (phase: StartPhase): Deferred {
    return this.#phases.get(phase) as Deferred
  }
}
