import type { EventStream } from '../../node/api/event-stream.ts'
import type { NodeView } from '../nodes/monitoring.ts'

/** At most one `delta` per stream this often. */
export const DEFAULT_BATCH_MS = 1000
/** Nodes (changed or removed) a lagging reader may have waiting; past it the stream is closed. */
export const DEFAULT_MAX_PENDING = 10_000
/** A reader whose socket has not drained for this long is closed. */
export const DEFAULT_MAX_LAG_MS = 30_000

/** The whole-state parts of a delta: sent as their latest state when they changed. */
export type DeltaField = 'models' | 'repository' | 'deployments' | 'rollouts'

export interface DeltaStreamInit {
  /** @default DEFAULT_BATCH_MS */
  batchMs?: number
  /** @default DEFAULT_MAX_PENDING */
  maxPending?: number
  /** @default DEFAULT_MAX_LAG_MS */
  maxLagMs?: number
}

/** What a delta stream needs of the event stream under it. */
export type DeltaTarget = Pick<EventStream, 'send' | 'close' | 'closed' | 'blocked' | 'onDrain' | 'onClose'>

/** What one `delta` event carries. */
export interface Delta {
  /** the latest state of each node that changed since the last delta, once each */
  nodes: NodeView[]
  /** nodes gone since the last delta */
  removed: string[]
  models?: unknown
  repository?: unknown
  deployments?: unknown
  rollouts?: unknown
}

/**
 * One dashboard's event stream, batched: changes collect per node (the
 * latest view replaces the one waiting, a removal replaces both) and per
 * whole-state field, and go out as one `delta` event at most every
 * `batchMs`. Nothing is serialised until it is sent, so what waits for a
 * reader costs a reference per changed node. While the socket waits for
 * `drain` nothing is written and changes keep collecting; a reader whose
 * socket waits with more than `maxPending` nodes pending, or did not drain
 * for `maxLagMs`, gets `close` `{"reason":"slow-consumer"}`.
 */
export class DeltaStream {
  readonly #stream: DeltaTarget
  readonly #batchMs: number
  readonly #maxPending: number
  readonly #maxLagMs: number
  readonly #nodes = new Map<string, NodeView | null>()
  readonly #fields = new Map<DeltaField, () => unknown>()
  #lastSent = -Infinity
  #blockedSince: number | undefined
  #timer: NodeJS.Timeout | undefined

  constructor (stream: DeltaTarget, init: DeltaStreamInit = {}) {
    this.#stream = stream
    this.#batchMs = init.batchMs ?? DEFAULT_BATCH_MS
    this.#maxPending = init.maxPending ?? DEFAULT_MAX_PENDING
    this.#maxLagMs = init.maxLagMs ?? DEFAULT_MAX_LAG_MS
    stream.onDrain(() => { if (this.#timer == null && this.#waiting) this.#flush() })
    stream.onClose(() => {
      clearTimeout(this.#timer)
      this.#nodes.clear()
      this.#fields.clear()
    })
  }

  /** Send an event now (the stream's first, `snapshot`); the next delta waits a full batch. */
  send (event: string, data: unknown): void {
    this.#stream.send(event, data)
    this.#lastSent = Date.now()
  }

  node (view: NodeView): void {
    this.#nodes.set(view.peerId, view)
    this.#changed()
  }

  removed (peerId: string): void {
    this.#nodes.set(peerId, null)
    this.#changed()
  }

  /** `field` changed; `latest` gives its state when the delta goes out. */
  field (field: DeltaField, latest: () => unknown): void {
    this.#fields.set(field, latest)
    this.#changed()
  }

  get #waiting (): boolean {
    return this.#nodes.size > 0 || this.#fields.size > 0
  }

  #changed (): void {
    if (this.#stream.closed) return
    // a reader that keeps up takes any number of changes a second; the cap is for one that does not
    if (this.#nodes.size > this.#maxPending && this.#stream.blocked) {
      this.#stream.close('slow-consumer')
      return
    }
    if (this.#timer != null) return
    this.#timer = setTimeout(() => { this.#flush() }, Math.max(0, this.#lastSent + this.#batchMs - Date.now()))
  }

  #flush (): void {
    this.#timer = undefined
    if (this.#stream.closed || !this.#waiting) return
    const now = Date.now()
    if (this.#stream.blocked) {
      this.#blockedSince ??= now
      if (now - this.#blockedSince >= this.#maxLagMs) {
        this.#stream.close('slow-consumer')
        return
      }
      // look again: a reader that never drains must still meet maxLagMs
      this.#timer = setTimeout(() => { this.#flush() }, this.#batchMs)
      return
    }
    if (now - this.#lastSent < this.#batchMs) {
      this.#timer = setTimeout(() => { this.#flush() }, this.#lastSent + this.#batchMs - now)
      return
    }
    this.#blockedSince = undefined
    const delta: Delta = { nodes: [], removed: [] }
    for (const [peerId, view] of this.#nodes) {
      if (view == null) delta.removed.push(peerId)
      else delta.nodes.push(view)
    }
    for (const [field, latest] of this.#fields) delta[field] = latest()
    this.#nodes.clear()
    this.#fields.clear()
    this.#stream.send('delta', delta)
    this.#lastSent = now
  }
}
