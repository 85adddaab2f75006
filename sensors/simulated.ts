import { readFile } from 'node:fs/promises'
import { SensorConfigError } from './errors.ts'
import { AbstractSensor, type SensorInit } from './sensor.ts'
import type { SimulatedSensorSpec } from './schema.ts'

export type SimulatedSensorInit = SensorInit & Omit<SimulatedSensorSpec, 'id' | 'type' | 'unit' | 'geo' | 'min' | 'max'>

/** mulberry32: small, fast, seedable; good enough for test signals and training data. */
export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * A sensor that makes up its readings: a sine, a random walk, plain noise or
 * a CSV column replayed, with optional gaussian noise and spikes. Used for
 * demos, tests and benchmarks, and to replay recorded data on a gateway.
 */
export class SimulatedSensor extends AbstractSensor {
  readonly type = 'simulated'
  readonly #init: SimulatedSensorInit
  readonly #random: () => number
  #timer?: NodeJS.Timeout
  #count = 0
  #walk: number
  #csv: string[] = []
  #exhausted = false
  #startedAt = 0

  constructor (init: SimulatedSensorInit) {
    super(init)
    this.#init = init
    this.#random = prng(init.seed)
    this.#walk = init.offset
    if (init.waveform === 'csv' && init.csv == null) throw new SensorConfigError(`sensor ${init.id}: waveform csv needs csv.path`, init.id, 'csv')
  }

  /** True once a CSV replay without `loop` has played every row. */
  get exhausted (): boolean {
    return this.#exhausted
  }

  /**
   * The value for the next tick; exposed so tests can check waveforms without
   * timers. A CSV cell that is not a number comes back as the raw text, so it
   * is counted as garbage like a bad line from a real device.
   */
  next (now = Date.now()): number | string {
    const i = this.#init
    this.#count++
    let v: number
    switch (i.waveform) {
      case 'sine':
        v = i.offset + i.amplitude * Math.sin(2 * Math.PI * (now - this.#startedAt) / i.periodMs) + this.#gauss() * i.noise
        break
      case 'randomWalk':
        this.#walk += this.#gauss() * (i.noise === 0 ? i.amplitude / 10 : i.noise)
        v = this.#walk
        break
      case 'noise':
        v = i.offset + this.#gauss() * (i.noise === 0 ? i.amplitude : i.noise)
        break
      case 'csv': {
        const n = this.#csv.length
        const idx = this.#count - 1
        if (idx >= n - 1 && i.csv?.loop === false) this.#exhausted = true
        const cell = this.#csv[idx % n] ?? ''
        const num = Number(cell)
        if (cell === '' || Number.isNaN(num)) return cell
        v = num + this.#gauss() * i.noise
        break
      }
    }
    const s = i.spikes
    if (s != null && ((s.every != null && this.#count % s.every === 0) || (s.probability != null && this.#random() < s.probability))) {
      v += s.magnitude
    }
    return v
  }

  protected async _open (): Promise<void> {
    if (this.#init.waveform === 'csv') this.#csv = await this.#loadCsv()
    this.#startedAt = Date.now()
    const periodMs = 1000 / this.#init.rateHz
    // timers fire at most once a millisecond, and late on a busy machine: each
    // tick emits what is due by the clock, so the rate holds on average (a
    // stall longer than a second drops the excess rather than bursting it)
    const tickMs = Math.max(1, periodMs)
    // what is due is counted on the monotonic clock: by the wall clock, a step
    // back (NTP, faketime in the chaos run) left nothing due, and the sensor
    // silent, until the wall clock caught up again
    const scheduleStart = performance.now()
    let emitted = 0
    this.#timer = setInterval(() => {
      // half a tick of slack: a timer firing a millisecond early still emits its reading
      const due = Math.floor((performance.now() - scheduleStart + tickMs / 2) / periodMs)
      if (due - emitted > this.#init.rateHz) emitted = due - Math.ceil(this.#init.rateHz)
      for (; emitted < due; emitted++) {
        this.accept(this.next())
        if (this.#exhausted) {
          clearInterval(this.#timer)
          return
        }
      }
    }, tickMs)
  }

  protected async _close (): Promise<void> {
    clearInterval(this.#timer)
  }

  async #loadCsv (): Promise<string[]> {
    const csv = this.#init.csv!
    let text: string
    try {
      text = await readFile(csv.path, 'utf8')
    } catch (err: any) {
      throw new SensorConfigError(`sensor ${this.id}: cannot read csv ${csv.path}: ${err.code ?? err.message}`, this.id, 'csv.path', { cause: err })
    }
    const rows = text.split(/\r?\n/).filter(l => l.trim() !== '').map(l => l.split(',').map(c => c.trim()))
    let column = typeof csv.column === 'number' ? csv.column : -1
    if (csv.header) {
      const header = rows.shift() ?? []
      if (typeof csv.column === 'string') column = header.indexOf(csv.column)
    }
    if (column < 0) throw new SensorConfigError(`sensor ${this.id}: csv column ${JSON.stringify(csv.column)} not found`, this.id, 'csv.column')
    const values = rows.map(r => r[column] ?? '')
    if (values.length === 0) throw new SensorConfigError(`sensor ${this.id}: csv ${csv.path} has no rows`, this.id, 'csv.path')
    return values
  }

  /** Box–Muller. */
  #gauss (): number {
    const u = 1 - this.#random()
    const v = this.#random()
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
  }
}
