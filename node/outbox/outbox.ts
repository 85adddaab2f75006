import { randomUUID } from 'node:crypto'
import { DedupeWindow } from './dedupe.ts'
import { DeadLetterNotFoundError } from './errors.ts'
import type { ActionSpec, ActionType } from '../actions/schema.ts'
import { diskGuardOf, type Database } from '../store/db.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

/**
 * One queued action or notification. `id` doubles as the idempotency key
 * every channel sends along; rules make it from the request id (actionKey),
 * so the same action of the same request has the same id on every node.
 */
export interface OutboxJob {
  id: string
  type: ActionType
  /** the action with its templates already rendered, so every attempt sends the same thing */
  action: ActionSpec
  /** the prediction event that triggered it */
  event: Record<string, unknown>
  instance: string
  rule: string
  /** for scripts: the bundle's action script, the instance's scratch dir and the destinations the bundle declares */
  script?: { path: string, scratch: string, network?: string[] }
  createdAt: number
  attempts: number
  nextAt: number
  lastError?: string
  /** set while an attempt runs: found set at start, the agent died during that attempt */
  inFlightSince?: number
  /** attempts during which the agent died */
  crashes?: number
}

export interface DeadLetter extends OutboxJob {
  deadAt: number
  /** why it was given up: too many attempts, a permanent failure, or attempts the agent did not survive */
  reason?: 'attempts' | 'permanent' | 'crashes'
}

export type EnqueueInput = Pick<OutboxJob, 'type' | 'action' | 'event' | 'instance' | 'rule'> & Partial<Pick<OutboxJob, 'id' | 'script'>>

/** Deliver one job; throw to retry later, throw an error with `permanent: true` to give up at once. */
export type Deliver = (job: OutboxJob, signal: AbortSignal) => Promise<void>

export interface OutboxMetrics {
  outboxPending: { set(v: number): void }
  outboxDelivered: { inc(labels: { type: string }): void }
  outboxFailures: { inc(labels: { type: string }): void }
  outboxDead: { inc(labels: { type: string }): void }
  /** ms from the triggering reading or request to delivery */
  actionLatency?: { observe(labels: { type: string }, seconds: number): void }
}

export interface OutboxComponents {
  db: Database
  deliver: Deliver
  logger: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>
  metrics?: OutboxMetrics
}

export interface OutboxInit {
  /** @default 10 */
  maxAttempts?: number
  /** @default 1000 */
  baseDelayMs?: number
  /** @default 300000 */
  maxDelayMs?: number
  /** @default 4 */
  concurrency?: number
  /** @default 15000 */
  attemptTimeoutMs?: number
  /** @default Math.random */
  random?: () => number
  /** A job found in flight at start this many times (the agent died while delivering it) is dead-lettered. @default 2 */
  maxCrashes?: number
  /** How long a job id is remembered to drop repeats (a retried request reaching this node again). @default 86400000 (24 h) */
  dedupeWindowMs?: number
  /** Job ids remembered at most, oldest forgotten first: bounds the memory and disk of the window. @default 10000 */
  dedupeMaxEntries?: number
}

export const DEFAULT_MAX_ATTEMPTS = 10
export const DEFAULT_BASE_DELAY_MS = 1000
export const DEFAULT_MAX_DELAY_MS = 300_000
export const DEFAULT_CONCURRENCY = 4
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 15_000
export const DEFAULT_MAX_CRASHES = 2
/** Jobs whose state may wait in memory for disk space; past this, enqueue refuses. */
export const MAX_UNSAVED = 10_000

/** A change of a job's state on disk that waits for space. */
type Unsaved = { op: 'put', job: OutboxJob } | { op: 'del' } | { op: 'dead', letter: DeadLetter }

/**
 * The durable outbox: every action and notification is written to level
 * before anything is sent, delivered at least once, retried with
 * exponential backoff and jitter, and moved to the dead letters after
 * `maxAttempts`. A job leaves the queue only after its delivery succeeded,
 * so a crash or restart in between sends it again — with the same id as
 * idempotency key, which a deduping receiver uses to ignore the repeat.
 * While the disk is full, jobs are still taken and delivered, their state
 * kept in memory (up to MAX_UNSAVED) and written once the disk guard
 * reports space again; only a process that dies before then loses them.
 *
 * A job whose id was taken within the dedupe window (queued, delivered or
 * dead-lettered) is not queued again: the same action of the same request
 * arriving twice — a client's retry, or a request the router retried that
 * reached this node by two ways — goes out once from here. The window is in
 * level beside the queue, so it holds across restarts.
 */
export class Outbox implements Startable {
  readonly #c: OutboxComponents
  readonly #maxAttempts: number
  readonly #baseDelayMs: number
  readonly #maxDelayMs: number
  readonly #concurrency: number
  readonly #attemptTimeoutMs: number
  readonly #random: () => number
  readonly #maxCrashes: number
  readonly #queue
  readonly #dead
  readonly #seenLevel
  readonly #seen: DedupeWindow
  readonly #jobs = new Map<string, OutboxJob>()
  readonly #inFlight = new Map<string, Promise<void>>()
  readonly #unsaved = new Map<string, Unsaved>()
  /**
   * When each job is due, on the monotonic clock (performance.now()). The
   * job's `nextAt` (wall clock) is what survives a restart; scheduling by it
   * held every retry set while the clock was ahead until the wall clock
   * caught up again after it stepped back (5 minutes late in a chaos run).
   */
  readonly #due = new Map<string, number>()
  #saving: Promise<void> = Promise.resolve()
  #timer?: NodeJS.Timeout
  #running = false

  constructor (components: OutboxComponents, init: OutboxInit = {}) {
    this.#c = components
    this.#maxAttempts = init.maxAttempts ?? DEFAULT_MAX_ATTEMPTS
    this.#baseDelayMs = init.baseDelayMs ?? DEFAULT_BASE_DELAY_MS
    this.#maxDelayMs = init.maxDelayMs ?? DEFAULT_MAX_DELAY_MS
    this.#concurrency = init.concurrency ?? DEFAULT_CONCURRENCY
    this.#attemptTimeoutMs = init.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS
    this.#random = init.random ?? Math.random
    this.#maxCrashes = init.maxCrashes ?? DEFAULT_MAX_CRASHES
    this.#queue = components.db.sublevel<string, OutboxJob>('outbox', { valueEncoding: 'json' })
    this.#dead = components.db.sublevel<string, DeadLetter>('outbox-dead', { valueEncoding: 'json' })
    this.#seenLevel = components.db.sublevel<string, number>('outbox-seen', { valueEncoding: 'json' })
    this.#seen = new DedupeWindow(this.#seenLevel, {
      ...(init.dedupeWindowMs == null ? {} : { windowMs: init.dedupeWindowMs }),
      ...(init.dedupeMaxEntries == null ? {} : { maxEntries: init.dedupeMaxEntries })
    })
    diskGuardOf(components.db)?.addEventListener('resume', () => { void this.#saveUnsaved() })
  }

  async start (): Promise<void> {
    await this.#seen.load()
    const crashed: OutboxJob[] = []
    const now = Date.now()
    const mono = performance.now()
    for await (const [id, job] of this.#queue.iterator()) {
      this.#jobs.set(id, job)
      // from a wall-clock time written before the restart: never later than the longest backoff
      this.#due.set(id, mono + Math.max(0, Math.min(job.nextAt - now, this.#maxDelayMs)))
      if (job.inFlightSince != null) crashed.push(job)
    }
    for (const job of crashed) await this.#survivedCrash(job)
    this.#running = true
    this.#gauge()
    if (this.#jobs.size > 0) this.#c.logger.info({ pending: this.#jobs.size }, 'outbox resumed')
    this.#kick()
  }

  async stop (): Promise<void> {
    this.#running = false
    clearTimeout(this.#timer)
    await Promise.allSettled([...this.#inFlight.values()])
  }

  get size (): number {
    return this.#jobs.size
  }

  /** Jobs whose state on disk waits for space. */
  get unsaved (): number {
    return this.#unsaved.size
  }

  pending (): OutboxJob[] {
    return [...this.#jobs.values()].sort((a, b) => a.createdAt - b.createdAt)
  }

  async dead (limit = 100): Promise<DeadLetter[]> {
    return await this.#dead.values({ limit }).all()
  }

  /**
   * Persist a job, then try to deliver it right away. A repeat of an id
   * taken within the dedupe window is not queued again: the answer is the
   * job still queued under that id, or undefined once it left the queue.
   */
  async enqueue (input: EnqueueInput): Promise<OutboxJob | undefined> {
    const now = Date.now()
    const id = input.id ?? randomUUID()
    if (this.#jobs.has(id) || this.#seen.has(id, now)) {
      this.#c.logger.debug({ job: id, type: input.type, instance: input.instance, rule: input.rule, takenAt: this.#seen.takenAt(id) }, 'repeat of a job already taken; dropped')
      return this.#jobs.get(id)
    }
    const job: OutboxJob = { ...input, id, createdAt: now, attempts: 0, nextAt: now }
    const seen = this.#seen.record(id, now)
    try {
      await this.#durably(job.id, { op: 'put', job }, async () => {
        await this.#c.db.batch([{ type: 'put', key: job.id, value: job, sublevel: this.#queue }, ...seen])
      }, this.#unsaved.size < MAX_UNSAVED)
    } catch (err) {
      this.#seen.forget(id)
      throw err
    }
    this.#jobs.set(job.id, job)
    this.#due.set(job.id, performance.now())
    this.#gauge()
    this.#kick()
    return job
  }

  /** Put a dead letter back in the queue with a fresh attempt count (same id, so receivers still dedupe). */
  async retryDead (id: string): Promise<OutboxJob> {
    const letter = await this.#dead.get(id)
    if (letter == null) throw new DeadLetterNotFoundError(`no dead letter ${id}`)
    const { deadAt: _d, ...rest } = letter
    const { reason: _r, crashes: _c, inFlightSince: _i, ...fresh } = rest
    const job: OutboxJob = { ...fresh, attempts: 0, nextAt: Date.now() }
    await this.#c.db.batch([{ type: 'put', key: id, value: job, sublevel: this.#queue }, { type: 'del', key: id, sublevel: this.#dead }])
    this.#jobs.set(id, job)
    this.#due.set(id, performance.now())
    this.#gauge()
    this.#kick()
    return job
  }

  /** Start whatever is due, up to the concurrency limit, and sleep until the next job is due. */
  #kick (): void {
    if (!this.#running) return
    clearTimeout(this.#timer)
    const now = performance.now()
    const dueAt = (j: OutboxJob): number => this.#due.get(j.id) ?? now
    let nextDue = Infinity
    const due = [...this.#jobs.values()].filter(j => !this.#inFlight.has(j.id)).sort((a, b) => dueAt(a) - dueAt(b))
    for (const job of due) {
      if (dueAt(job) > now) {
        nextDue = dueAt(job)
        break
      }
      if (this.#inFlight.size >= this.#concurrency) break
      const attempt = this.#attempt(job).catch(err => {
        // only bookkeeping (level) can fail here; the job stays queued and is tried again after a
        // while. At once, it spun: level refuses on a database being reopened (after a full disk)
        // or closed (shutdown) without touching the event loop, so the retries never let the
        // reopen finish, nor the API answer (an agent stuck so in a chaos run)
        this.#due.set(job.id, performance.now() + this.#baseDelayMs)
        this.#c.logger.error({ job: job.id, err: err.message, retryInMs: this.#baseDelayMs }, 'outbox bookkeeping failed')
      }).finally(() => {
        this.#inFlight.delete(job.id)
        this.#kick()
      })
      this.#inFlight.set(job.id, attempt)
    }
    if (nextDue < Infinity) this.#timer = setTimeout(() => { this.#kick() }, Math.max(0, nextDue - now))
  }

  async #attempt (job: OutboxJob): Promise<void> {
    job.attempts++
    // written before the attempt: if the agent dies during it, the next start knows
    job.inFlightSince = Date.now()
    // on a full disk the marker waits in memory with the job's other state: delivery goes on
    try {
      await this.#durably(job.id, { op: 'put', job }, async () => { await this.#queue.put(job.id, job) })
    } catch (err) {
      // not attempted: it does not count
      job.attempts--
      delete job.inFlightSince
      throw err
    }
    try {
      await this.#c.deliver(job, AbortSignal.timeout(this.#attemptTimeoutMs))
    } catch (err: any) {
      await this.#failed(job, err)
      return
    }
    await this.#durably(job.id, { op: 'del' }, async () => { await this.#queue.del(job.id) })
    this.#jobs.delete(job.id)
    this.#due.delete(job.id)
    this.#gauge()
    this.#c.metrics?.outboxDelivered.inc({ type: job.type })
    const started = job.event.ts
    if (typeof started === 'number') this.#c.metrics?.actionLatency?.observe({ type: job.type }, Math.max(0, Date.now() - started) / 1000)
    this.#c.logger.debug({ job: job.id, type: job.type, instance: job.instance, rule: job.rule, attempts: job.attempts }, 'delivered')
  }

  async #failed (job: OutboxJob, err: Error & { permanent?: boolean }): Promise<void> {
    delete job.inFlightSince
    job.lastError = (err.message ?? String(err)).slice(0, 500)
    this.#c.metrics?.outboxFailures.inc({ type: job.type })
    if (err.permanent === true || job.attempts >= this.#maxAttempts) {
      await this.#bury(job, err.permanent === true ? 'permanent' : 'attempts')
      return
    }
    const exp = Math.min(this.#maxDelayMs, this.#baseDelayMs * 2 ** (job.attempts - 1))
    // "equal jitter": at least half the backoff, so retries from many jobs spread out without collapsing to zero
    const delay = Math.round(exp / 2 + this.#random() * exp / 2)
    job.nextAt = Date.now() + delay
    this.#due.set(job.id, performance.now() + delay)
    await this.#durably(job.id, { op: 'put', job }, async () => { await this.#queue.put(job.id, job) })
    this.#c.logger.warn({ job: job.id, type: job.type, attempts: job.attempts, retryInMs: delay, err: job.lastError }, 'delivery failed; will retry')
  }

  /**
   * Write a job's new state; when the disk is full, keep it in memory to be
   * written on resume (if `hold` allows) instead of failing. A later state
   * of the same job replaces the one waiting.
   */
  async #durably (id: string, change: Unsaved, write: () => Promise<void>, hold = true): Promise<void> {
    try {
      await write()
      this.#unsaved.delete(id)
    } catch (err: any) {
      if (err?.code !== 'ERR_DISK_FULL' || !hold) throw err
      this.#unsaved.set(id, change)
    }
  }

  /** Space is back: write what waited, one batch, one run at a time. */
  async #saveUnsaved (): Promise<void> {
    this.#saving = this.#saving.then(async () => {
      if (this.#unsaved.size === 0) return
      const changes = [...this.#unsaved]
      const batch = this.#c.db.batch()
      for (const [id, c] of changes) {
        // the job's place in the dedupe window, which waited with it
        const at = this.#seen.takenAt(id)
        if (at != null) batch.put(id, at, { sublevel: this.#seenLevel })
        if (c.op === 'put') {
          batch.put(id, c.job, { sublevel: this.#queue })
        } else {
          batch.del(id, { sublevel: this.#queue })
          if (c.op === 'dead') batch.put(id, c.letter, { sublevel: this.#dead })
        }
      }
      await batch.write()
      // what changed again while the batch ran stays for the next round
      for (const [id, c] of changes) if (this.#unsaved.get(id) === c) this.#unsaved.delete(id)
      this.#c.logger.info({ written: changes.length }, 'outbox state held during the full disk written')
    }).catch(err => {
      if (err?.code !== 'ERR_DISK_FULL') this.#c.logger.error({ err: err.message }, 'writing outbox state held during the full disk failed')
    })
    await this.#saving
  }

  /**
   * The agent died while this job was being delivered. Once is bad luck (a
   * power cut); `maxCrashes` times means the job is what kills it — an
   * action script that signals or exhausts its agent — and it goes to the
   * dead letters instead of killing the agent at every start.
   */
  async #survivedCrash (job: OutboxJob): Promise<void> {
    const since = job.inFlightSince
    delete job.inFlightSince
    job.crashes = (job.crashes ?? 0) + 1
    job.lastError = `the agent stopped while delivering this job (attempt ${job.attempts}, started ${new Date(since ?? 0).toISOString()})`
    if (job.crashes >= this.#maxCrashes) {
      job.lastError = `the agent stopped ${job.crashes} times while delivering this job; not tried again`
      await this.#bury(job, 'crashes')
      return
    }
    this.#c.logger.warn({ job: job.id, type: job.type, instance: job.instance, rule: job.rule, crashes: job.crashes }, 'the agent stopped while delivering this job; trying it again')
    await this.#durably(job.id, { op: 'put', job }, async () => { await this.#queue.put(job.id, job) })
  }

  async #bury (job: OutboxJob, reason: NonNullable<DeadLetter['reason']>): Promise<void> {
    const letter: DeadLetter = { ...job, deadAt: Date.now(), reason }
    await this.#durably(job.id, { op: 'dead', letter }, async () => {
      await this.#c.db.batch([{ type: 'del', key: job.id, sublevel: this.#queue }, { type: 'put', key: job.id, value: letter, sublevel: this.#dead }])
    })
    this.#jobs.delete(job.id)
    this.#due.delete(job.id)
    this.#gauge()
    this.#c.metrics?.outboxDead.inc({ type: job.type })
    this.#c.logger.error({ job: job.id, type: job.type, instance: job.instance, rule: job.rule, attempts: job.attempts, crashes: job.crashes, reason, err: job.lastError }, 'delivery abandoned: moved to dead letters')
  }

  #gauge (): void {
    this.#c.metrics?.outboxPending.set(this.#jobs.size)
  }
}
