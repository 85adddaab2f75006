/** Instance states that show a node is getting on with a placement. */
const PROGRESSING = new Set(['pulling', 'starting', 'running'])

export interface ProgressInit {
  /** A node named in a placement with nothing pulling, starting or running for this long is given up on. @default 60_000 */
  deadlineMs?: number
  /** For this long, after which it may be chosen again. @default 300_000 */
  backoffMs?: number
}

/**
 * Notices placed nodes that make no progress: a node that never receives
 * the placement (its clock a year behind, so it refuses every write it is
 * sent), or whose instance keeps failing. Past the deadline the scheduler
 * places the deployment elsewhere and leaves that node out of it for
 * `backoffMs`; after that it may be chosen again, so a node that was fixed
 * rejoins by itself. Kubernetes' `progressDeadlineSeconds`, per node.
 */
export class ProgressWatch {
  readonly #deadlineMs: number
  readonly #backoffMs: number
  /** deployment → node → since when it shows no progress (ms) */
  readonly #pending = new Map<string, Map<string, number>>()
  /** deployment → node → left out until (ms) */
  readonly #stuck = new Map<string, Map<string, number>>()

  constructor (init: ProgressInit = {}) {
    this.#deadlineMs = init.deadlineMs ?? 60_000
    this.#backoffMs = init.backoffMs ?? 300_000
  }

  /**
   * Look at the nodes a deployment is placed on (while it should run) with
   * `stateOf(node)` their instance state for it. Returns the nodes that just
   * passed the deadline.
   */
  observe (deployment: string, nodes: string[], stateOf: (node: string) => string | undefined, now: number): string[] {
    const pending = this.#pending.get(deployment) ?? new Map<string, number>()
    const late: string[] = []
    for (const node of [...pending.keys()]) if (!nodes.includes(node)) pending.delete(node)
    for (const node of nodes) {
      const state = stateOf(node)
      if (state != null && PROGRESSING.has(state)) {
        pending.delete(node)
        continue
      }
      const since = pending.get(node) ?? now
      pending.set(node, since)
      if (now - since >= this.#deadlineMs) {
        late.push(node)
        pending.delete(node)
        const stuck = this.#stuck.get(deployment) ?? new Map<string, number>()
        stuck.set(node, now + this.#backoffMs)
        this.#stuck.set(deployment, stuck)
      }
    }
    if (pending.size > 0) this.#pending.set(deployment, pending)
    else this.#pending.delete(deployment)
    return late
  }

  /** Nodes left out of `deployment` now. */
  excluded (deployment: string, now: number): Set<string> {
    const stuck = this.#stuck.get(deployment)
    if (stuck == null) return new Set()
    for (const [node, until] of stuck) if (until <= now) stuck.delete(node)
    if (stuck.size === 0) this.#stuck.delete(deployment)
    return new Set(stuck.keys())
  }

  /** Forget a deployment (deleted, or not this scheduler's any more). */
  forget (deployment: string): void {
    this.#pending.delete(deployment)
    this.#stuck.delete(deployment)
  }

  /** Forget everything: a new term starts watching afresh. */
  clear (): void {
    this.#pending.clear()
    this.#stuck.clear()
  }
}
