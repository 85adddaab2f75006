import { TypedEventEmitter } from '@libp2p/interface'
import { pushable } from 'it-pushable'
import { BadReadingError, SensorNotOpenError } from './errors.ts'
import type { Logger } from 'pino'

/** One measurement. `ts` is wall-clock ms when the driver received it. */
export interface Reading {
  sensorId: string
  ts: number
  value: number
}

export interface Geo {
  lat: number
  lon: number
  alt?: number
}

/** What a node advertises about a sensor in its registry entry. */
export interface SensorInfo {
  id: string
  /** the driver: gpio, serial, mqtt, simulated */
  type: string
  /** what it measures (temperature, door, …); deployments ask for this */
  measures?: string
  unit?: string
  geo?: Geo
}

export type SensorStatus = 'opening' | 'open' | 'closing' | 'closed'

export interface SensorEvents {
  reading: CustomEvent<Reading>
  rejected: CustomEvent<BadReadingError>
  status: CustomEvent<{ status: SensorStatus, error?: Error }>
}

/** The least of a logger a driver needs, so tests can hand in anything. */
export type SensorLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>

export interface SensorInit {
  id: string
  measures?: string
  unit?: string
  geo?: Geo
  /** readings below this are garbage from the device, not data */
  min?: number
  /** readings above this are garbage from the device, not data */
  max?: number
  logger?: SensorLogger
}

export interface SensorStats {
  readings: number
  rejected: number
  lastReading?: Reading
}

const silent: SensorLogger = { debug () {}, info () {}, warn () {}, error () {} } as unknown as SensorLogger

/**
 * The one interface behind every sensor driver (the abstract-level pattern):
 * public methods check the lifecycle, then call `_open/_read/_close`
 * implemented per driver. Drivers hand raw values to `accept()`, which turns
 * garbage into a counted, logged `rejected` event instead of an error, so a
 * flaky device never takes the agent down.
 */
export abstract class AbstractSensor extends TypedEventEmitter<SensorEvents> {
  readonly id: string
  abstract readonly type: string
  readonly measures: string | undefined
  readonly unit: string | undefined
  readonly geo: Geo | undefined
  protected readonly log: SensorLogger
  readonly #min: number
  readonly #max: number
  #status: SensorStatus = 'closed'
  #readings = 0
  #rejected = 0
  #last?: Reading

  constructor (init: SensorInit) {
    super()
    this.id = init.id
    this.measures = init.measures
    this.unit = init.unit
    this.geo = init.geo
    this.#min = init.min ?? -Infinity
    this.#max = init.max ?? Infinity
    this.log = init.logger ?? silent
  }

  get status (): SensorStatus {
    return this.#status
  }

  info (): SensorInfo {
    const info: SensorInfo = { id: this.id, type: this.type }
    if (this.measures != null) info.measures = this.measures
    if (this.unit != null) info.unit = this.unit
    if (this.geo != null) info.geo = this.geo
    return info
  }

  stats (): SensorStats {
    const stats: SensorStats = { readings: this.#readings, rejected: this.#rejected }
    if (this.#last != null) stats.lastReading = this.#last
    return stats
  }

  async open (): Promise<void> {
    if (this.#status === 'open' || this.#status === 'opening') return
    if (this.#status === 'closing') throw new SensorNotOpenError(`sensor ${this.id} is closing`, this.id)
    this.#setStatus('opening')
    try {
      await this._open()
    } catch (err: any) {
      this.#setStatus('closed', err)
      throw err
    }
    this.#setStatus('open')
  }

  async close (): Promise<void> {
    if (this.#status === 'closed' || this.#status === 'closing') return
    this.#setStatus('closing')
    try {
      await this._close()
    } finally {
      this.#setStatus('closed')
    }
  }

  /** One reading now: polled from the device where it can be, else the latest one received. */
  async read (): Promise<Reading> {
    if (this.#status !== 'open') throw new SensorNotOpenError(`sensor ${this.id} is not open`, this.id)
    const raw = await this._read()
    if (raw === undefined) {
      if (this.#last == null) throw new BadReadingError(`sensor ${this.id} has not produced a reading yet`, this.id, 'nan')
      return this.#last
    }
    const reading = this.accept(raw)
    if (reading == null) throw new BadReadingError(`sensor ${this.id} gave no usable reading`, this.id, 'nan')
    return reading
  }

  /** Readings as they arrive, until `signal` aborts or the consumer stops iterating. */
  readings (options: { signal?: AbortSignal } = {}): AsyncIterable<Reading> {
    const queue = pushable<Reading>({ objectMode: true })
    const onReading = (evt: CustomEvent<Reading>): void => { queue.push(evt.detail) }
    const end = (): void => {
      this.removeEventListener('reading', onReading)
      queue.end()
    }
    this.addEventListener('reading', onReading)
    options.signal?.addEventListener('abort', end, { once: true })
    if (options.signal?.aborted === true) end()
    const self = this
    return {
      async * [Symbol.asyncIterator] () {
        try {
          yield * queue
        } finally {
          self.removeEventListener('reading', onReading)
          options.signal?.removeEventListener('abort', end)
        }
      }
    }
  }

  /**
   * Validate a raw value from the device; emit and return it as a reading, or
   * count, log and drop it. `raw` may be a number, a numeric string or a
   * boolean (GPIO levels).
   */
  protected accept (raw: unknown, ts = Date.now()): Reading | undefined {
    let value: number
    if (typeof raw === 'number') value = raw
    else if (typeof raw === 'boolean') value = raw ? 1 : 0
    else if (typeof raw === 'string' && raw.trim() !== '' && (!Number.isNaN(Number(raw)) || /^[+-]?nan$/i.test(raw.trim()))) value = Number(raw.trim())
    else {
      this.reject(new BadReadingError(`sensor ${this.id}: not a number: ${preview(raw)}`, this.id, 'parse'))
      return undefined
    }
    if (!Number.isFinite(value)) {
      this.reject(new BadReadingError(`sensor ${this.id}: not a finite number: ${preview(raw)}`, this.id, 'nan'))
      return undefined
    }
    if (value < this.#min || value > this.#max) {
      this.reject(new BadReadingError(`sensor ${this.id}: ${value} outside [${this.#min}, ${this.#max}]`, this.id, 'range'))
      return undefined
    }
    const reading: Reading = { sensorId: this.id, ts, value }
    this.#readings++
    this.#last = reading
    this.safeDispatchEvent('reading', { detail: reading })
    return reading
  }

  /** Count and log garbage; the first few in full, then every hundredth, so a babbling device cannot flood the log. */
  protected reject (err: BadReadingError): void {
    this.#rejected++
    if (this.#rejected <= 10 || this.#rejected % 100 === 0) {
      this.log.warn({ sensor: this.id, reason: err.reason, rejected: this.#rejected, err: err.message }, 'bad reading skipped')
    }
    this.safeDispatchEvent('rejected', { detail: err })
  }

  /** Poll the device for a raw value; push-only devices return undefined and `read()` answers with the latest reading. */
  protected async _read (): Promise<unknown> {
    return undefined
  }

  protected abstract _open (): Promise<void>
  protected abstract _close (): Promise<void>

  #setStatus (status: SensorStatus, error?: Error): void {
    this.#status = status
    this.safeDispatchEvent('status', { detail: error == null ? { status } : { status, error } })
  }
}

function preview (raw: unknown): string {
  const text = typeof raw === 'string' ? raw : JSON.stringify(raw) ?? String(raw)
  return JSON.stringify(text.length > 60 ? text.slice(0, 60) + '…' : text)
}
