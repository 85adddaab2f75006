import { cpus, freemem, loadavg, totalmem } from 'node:os'
import type { Registry } from '../registry/registry.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

/** One sample of this node's health, as written to `health/<peerId>`. */
export interface HealthSample {
  /** whole-machine CPU busy %, since the previous sample */
  cpuPct: number
  /** this agent process's CPU %, of one core */
  processCpuPct: number
  rssBytes: number
  memFreeBytes: number
  memTotalBytes: number
  load: [number, number, number]
  uptimeSec: number
  /** samples taken since start */
  seq: number
  /** writer's wall clock, ms */
  ts: number
}

/** What `health/<peerId>` holds. Written on change, so it says nothing about liveness: membership does. */
export interface HealthRecord extends HealthSample {
  /** model instances on the node */
  instances?: { total: number, running: number }
  [extra: string]: unknown
}

function cpuTimes (): { idle: number, total: number } {
  let idle = 0
  let total = 0
  for (const c of cpus()) {
    idle += c.times.idle
    total += c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle
  }
  return { idle, total }
}

const round1 = (n: number): number => Math.round(n * 10) / 10

/** Samples CPU as the difference between successive calls. */
export class HealthSampler {
  #cpu = cpuTimes()
  #proc = process.cpuUsage()
  #at = performance.now()
  #seq = 0

  sample (): HealthSample {
    const cpu = cpuTimes()
    const proc = process.cpuUsage()
    const at = performance.now()
    const total = cpu.total - this.#cpu.total
    const cpuPct = total > 0 ? 100 * (1 - (cpu.idle - this.#cpu.idle) / total) : 0
    const procMicros = (proc.user - this.#proc.user) + (proc.system - this.#proc.system)
    const processCpuPct = at > this.#at ? procMicros / 10 / (at - this.#at) : 0
    this.#cpu = cpu
    this.#proc = proc
    this.#at = at
    const [l1 = 0, l5 = 0, l15 = 0] = loadavg()
    return {
      cpuPct: round1(Math.max(0, Math.min(100, cpuPct))),
      processCpuPct: round1(processCpuPct),
      rssBytes: process.memoryUsage.rss(),
      memFreeBytes: freemem(),
      memTotalBytes: totalmem(),
      load: [round1(l1), round1(l5), round1(l15)],
      uptimeSec: Math.round(process.uptime()),
      seq: ++this.#seq,
      ts: Date.now()
    }
  }
}

export interface HealthReporterComponents {
  peerId: string
  registry: Pick<Registry, 'set'>
  sampler: { sample(): HealthSample }
  /** model instances on this node */
  instances?: () => { total: number, running: number }
  logger: Logger
}

export interface HealthReporterInit {
  /** Sample this often. @default 5000 */
  sampleIntervalMs?: number
  /** Write at least this often, changed or not. @default 60000 */
  maxIntervalMs?: number
  /**
   * A metric's change (CPU, memory, load) is written at most this often; a
   * change in instance counts is written at once. @default 20000
   */
  minIntervalMs?: number
  /** Machine or process CPU moved this many points since the last write. @default 15 */
  cpuChangePct?: number
  /** Used memory moved this many points (of total) since the last write. @default 5 */
  memoryChangePct?: number
  /** 1-minute load moved this much since the last write. @default 0.5 */
  loadChange?: number
}

/**
 * Writes `health/<self>` when it changes meaningfully (CPU, memory, load,
 * instance counts) or when `maxIntervalMs` passed, not every second: every
 * write is signed, gossiped and stored by every peer, so a quiet fleet
 * should be quiet. A metric's change waits `minIntervalMs` after the last
 * write (as kubelet's status updates are paced): machine-wide figures move
 * together on machines that share a host, and writes answering load with
 * load fed on themselves (30 agents on 2 cores wrote 7.6 times a minute
 * each).
 */
export class HealthReporter implements Startable {
  readonly #c: HealthReporterComponents
  readonly #init: Required<HealthReporterInit>
  #last?: HealthRecord
  #lastAt = 0
  #timer?: NodeJS.Timeout
  #writing = false

  constructor (components: HealthReporterComponents, init: HealthReporterInit = {}) {
    this.#c = components
    this.#init = {
      sampleIntervalMs: init.sampleIntervalMs ?? 5000,
      maxIntervalMs: init.maxIntervalMs ?? 60_000,
      minIntervalMs: init.minIntervalMs ?? 20_000,
      cpuChangePct: init.cpuChangePct ?? 15,
      memoryChangePct: init.memoryChangePct ?? 5,
      loadChange: init.loadChange ?? 0.5
    }
  }

  async start (): Promise<void> {
    await this.report(true)
    this.#timer = setInterval(() => {
      this.report().catch(err => { this.#c.logger.warn({ err: err.message }, 'writing health failed') })
    }, this.#init.sampleIntervalMs)
    this.#timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
  }

  /** The last record written. */
  get last (): HealthRecord | undefined {
    return this.#last
  }

  /** Sample now; write when it changed enough, when it is due, or when `force`. */
  async report (force = false): Promise<boolean> {
    if (this.#writing) return false
    const record: HealthRecord = { ...this.#c.sampler.sample(), ...(this.#c.instances == null ? {} : { instances: this.#c.instances() }) }
    const since = performance.now() - this.#lastAt
    const due = since >= this.#init.maxIntervalMs
    if (!force && !due && !this.#instancesChanged(record) && !(since >= this.#init.minIntervalMs && this.#changed(record))) return false
    this.#writing = true
    try {
      await this.#c.registry.set(`health/${this.#c.peerId}`, record)
      this.#last = record
      this.#lastAt = performance.now()
      return true
    } finally {
      this.#writing = false
    }
  }

  /** The scheduler places on instance counts: a change goes out at once. */
  #instancesChanged (now: HealthRecord): boolean {
    const last = this.#last
    return last == null || now.instances?.total !== last.instances?.total || now.instances?.running !== last.instances?.running
  }

  #changed (now: HealthRecord): boolean {
    const last = this.#last
    if (last == null) return true
    const used = (r: HealthRecord): number => r.memTotalBytes > 0 ? 100 * (1 - r.memFreeBytes / r.memTotalBytes) : 0
    return Math.abs(now.cpuPct - last.cpuPct) >= this.#init.cpuChangePct ||
      Math.abs(now.processCpuPct - last.processCpuPct) >= this.#init.cpuChangePct ||
      Math.abs(used(now) - used(last)) >= this.#init.memoryChangePct ||
      Math.abs(now.load[0] - last.load[0]) >= this.#init.loadChange
  }
}
