import { cpus, freemem, loadavg, totalmem } from 'node:os'

/** One heartbeat's worth of health, as written to `health/<peerId>`. */
export interface HealthSample {
  /** whole-machine CPU busy %, over the last interval */
  cpuPct: number
  /** this agent process's CPU %, of one core */
  processCpuPct: number
  rssBytes: number
  memFreeBytes: number
  memTotalBytes: number
  load: [number, number, number]
  uptimeSec: number
  /** heartbeat sequence number since start */
  seq: number
  /** writer's wall clock, ms */
  ts: number
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
