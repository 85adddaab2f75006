import type { Database } from '../store/db.ts'

/** Operator decisions about this node, kept across restarts and advertised in `node/<self>`. */
export interface NodeControlState {
  /** no instances at all, and no new placements */
  drained: boolean
  /** deployments an operator stopped on this node; they are placed elsewhere */
  excluded: string[]
}

/**
 * Drain and evict, as the scheduling issue's lifecycle control: the state
 * lives in level, and every change re-announces the node so schedulers and
 * the local reconciler act on it.
 */
export class NodeControl {
  readonly #db
  #state: NodeControlState = { drained: false, excluded: [] }
  readonly #announce: () => Promise<void>

  constructor (db: Database, announce: () => Promise<void>) {
    this.#db = db.sublevel<string, NodeControlState>('control', { valueEncoding: 'json' })
    this.#announce = announce
  }

  async load (): Promise<NodeControlState> {
    this.#state = (await this.#db.get('state')) ?? this.#state
    return this.state
  }

  get state (): NodeControlState {
    return { drained: this.#state.drained, excluded: [...this.#state.excluded] }
  }

  async setDrained (drained: boolean): Promise<NodeControlState> {
    return await this.#save({ ...this.#state, drained })
  }

  async setExcluded (deploymentId: string, excluded: boolean): Promise<NodeControlState> {
    const set = new Set(this.#state.excluded)
    if (excluded) set.add(deploymentId)
    else set.delete(deploymentId)
    return await this.#save({ ...this.#state, excluded: [...set].sort() })
  }

  async #save (state: NodeControlState): Promise<NodeControlState> {
    this.#state = state
    await this.#db.put('state', state)
    await this.#announce()
    return this.state
  }
}
