export interface BatcherInit<I, O> {
  /** items per batch, at most. @default 8 */
  maxSize?: number
  /** how long the first item waits for company; 0 batches what arrives in the same turn of the event loop. @default 0 */
  maxDelayMs?: number
  /** batches running at once (the worker count); more items wait and join the next batch. @default 1 */
  concurrency?: number
  /** run one batch; must answer one output per item, in order */
  run: (items: I[]) => Promise<O[]>
  /** items with different keys never share a batch (e.g. different inner shapes) */
  key?: (item: I) => string
}

interface Waiting<I, O> { item: I, resolve: (o: O) => void, reject: (err: unknown) => void }
interface Queue<I, O> { items: Array<Waiting<I, O>>, timer?: NodeJS.Timeout | NodeJS.Immediate }

export const DEFAULT_MAX_BATCH_SIZE = 8
export const DEFAULT_MAX_BATCH_DELAY_MS = 0

/**
 * Dynamic batching: concurrent requests for one model are joined into one
 * batch of up to `maxSize`, waiting at most `maxDelayMs` for the batch to
 * fill; a full batch leaves at once. While every worker is busy, requests
 * queue and leave together as the next batch when one frees up, so under
 * load batches grow by themselves without adding delay when idle.
 */
export class Batcher<I, O> {
  readonly #maxSize: number
  readonly #maxDelayMs: number
  readonly #run: (items: I[]) => Promise<O[]>
  readonly #key: (item: I) => string
  readonly #concurrency: number
  readonly #queues = new Map<string, Queue<I, O>>()
  #running = 0
  #batches = 0
  #items = 0

  constructor (init: BatcherInit<I, O>) {
    this.#maxSize = init.maxSize ?? DEFAULT_MAX_BATCH_SIZE
    this.#maxDelayMs = init.maxDelayMs ?? DEFAULT_MAX_BATCH_DELAY_MS
    this.#run = init.run
    this.#key = init.key ?? (() => '')
    this.#concurrency = init.concurrency ?? 1
  }

  /** Batches run and items in them so far (mean batch size = items / batches). */
  stats (): { batches: number, items: number } {
    return { batches: this.#batches, items: this.#items }
  }

  async submit (item: I): Promise<O> {
    const key = this.#key(item)
    let q = this.#queues.get(key)
    if (q == null) {
      q = { items: [] }
      this.#queues.set(key, q)
    }
    const queue = q
    const done = new Promise<O>((resolve, reject) => { queue.items.push({ item, resolve, reject }) })
    if (queue.items.length >= this.#maxSize) this.#flush(key)
    else this.#schedule(key, queue)
    return await done
  }

  /** Fail everything still waiting (the instance is stopping). */
  cancel (err: Error): void {
    for (const q of this.#queues.values()) {
      clearTimeout(q.timer as NodeJS.Timeout)
      clearImmediate(q.timer as NodeJS.Immediate)
      for (const w of q.items) w.reject(err)
    }
    this.#queues.clear()
  }

  #flush (key: string): void {
    const q = this.#queues.get(key)
    if (q == null) return
    clearTimeout(q.timer as NodeJS.Timeout)
    clearImmediate(q.timer as NodeJS.Immediate)
    q.timer = undefined
    // all workers busy: the items wait and go with the next batch
    if (this.#running >= this.#concurrency) return
    const batch = q.items.splice(0, this.#maxSize)
    if (q.items.length === 0) this.#queues.delete(key)
    else this.#schedule(key, q)
    if (batch.length === 0) return
    this.#batches++
    this.#items += batch.length
    this.#running++
    this.#run(batch.map(w => w.item)).then(outputs => {
      batch.forEach((w, i) => { w.resolve(outputs[i]!) })
    }, err => {
      for (const w of batch) w.reject(err)
    }).finally(() => {
      this.#running--
      const waiting = this.#queues.keys().next()
      if (!waiting.done) this.#flush(waiting.value)
    })
  }

  #schedule (key: string, q: Queue<I, O>): void {
    if (q.timer != null) return
    if (q.items.length >= this.#maxSize) q.timer = setImmediate(() => { this.#flush(key) })
    else q.timer = this.#maxDelayMs === 0 ? setImmediate(() => { this.#flush(key) }) : setTimeout(() => { this.#flush(key) }, this.#maxDelayMs)
  }
}
