import { access } from 'node:fs/promises'
import { BadReadingError, SensorConfigError } from './errors.ts'
import { getPath } from './json-path.ts'
import { AbstractSensor, type SensorInit } from './sensor.ts'
import type { SerialSensorSpec } from './schema.ts'
import type { SerialPort } from 'serialport'

export type SerialSensorInit = SensorInit & Pick<SerialSensorSpec, 'path' | 'baudRate' | 'parser' | 'reconnectMs'>

/**
 * Readings from a serial device (an Arduino, a Modbus bridge, a meter), one
 * per line: a plain number, a JSON object with the value at a path, or a
 * regex match. When the device disappears (unplugged, rebooted, the port
 * closed under us) the driver keeps trying to reopen the path and resumes
 * once it is back.
 */
export class SerialSensor extends AbstractSensor {
  readonly type = 'serial'
  readonly #init: SerialSensorInit
  readonly #pattern?: RegExp
  #port?: SerialPort
  #retry?: NodeJS.Timeout
  #watch?: NodeJS.Timeout
  #closing = false
  #connected = false
  #reconnects = 0

  constructor (init: SerialSensorInit) {
    super(init)
    this.#init = init
    const { format, jsonPath, pattern } = init.parser
    if (format === 'jsonl' && jsonPath == null) throw new SensorConfigError(`sensor ${init.id}: parser jsonl needs jsonPath`, init.id, 'parser.jsonPath')
    if (format === 'regex') {
      if (pattern == null) throw new SensorConfigError(`sensor ${init.id}: parser regex needs pattern`, init.id, 'parser.pattern')
      try {
        this.#pattern = new RegExp(pattern)
      } catch (err) {
        throw new SensorConfigError(`sensor ${init.id}: parser.pattern is not a valid regular expression`, init.id, 'parser.pattern', { cause: err })
      }
    }
  }

  /** Connected to the device right now (false while it is away). */
  get connected (): boolean {
    return this.#connected
  }

  /** Times the device came back after disappearing. */
  get reconnects (): number {
    return this.#reconnects
  }

  protected async _open (): Promise<void> {
    this.#closing = false
    // the first open must succeed, so a typo in the path is an error at start, not a silent retry loop
    await this.#connect()
  }

  protected async _close (): Promise<void> {
    this.#closing = true
    clearTimeout(this.#retry)
    clearInterval(this.#watch)
    const port = this.#port
    this.#port = undefined
    if (port?.isOpen === true) await new Promise<void>(resolve => { port.close(() => { resolve() }) })
  }

  async #connect (): Promise<void> {
    const { SerialPort, ReadlineParser } = await import('serialport')
    const port = new SerialPort({ path: this.#init.path, baudRate: this.#init.baudRate, autoOpen: false })
    await new Promise<void>((resolve, reject) => { port.open(err => { err == null ? resolve() : reject(err) }) })
    if (this.#closing) {
      port.close()
      return
    }
    this.#port = port
    this.#connected = true
    const lines = port.pipe(new ReadlineParser({ delimiter: this.#init.parser.delimiter, encoding: 'utf8' }))
    lines.on('data', (line: string) => { this.#onLine(line) })
    port.on('error', (err: Error) => { this.log.warn({ sensor: this.id, err: err.message }, 'serial port error') })
    port.on('close', () => { this.#lost(port) })
    // the port's own hang-up is not always reported (seen with a pty whose
    // other side went away while no read was pending): a device node that
    // is gone (udev removed it, the link vanished) means the device is gone
    clearInterval(this.#watch)
    this.#watch = setInterval(() => {
      access(this.#init.path).catch(() => {
        if (this.#port === port) port.destroy()
        this.#lost(port)
      })
    }, Math.min(1000, Math.max(100, this.#init.reconnectMs)))
  }

  /** `port` went away: reconnect, once, unless it was closed on purpose or already replaced. */
  #lost (port: SerialPort): void {
    if (this.#port !== port) return
    this.#port = undefined
    clearInterval(this.#watch)
    this.#connected = false
    if (this.#closing) return
    this.log.warn({ sensor: this.id, path: this.#init.path }, 'serial device disappeared; reconnecting')
    this.#scheduleReconnect()
  }

  #scheduleReconnect (): void {
    clearTimeout(this.#retry)
    this.#retry = setTimeout(() => {
      if (this.#closing) return
      this.#connect().then(() => {
        this.#reconnects++
        this.log.info({ sensor: this.id, path: this.#init.path }, 'serial device back')
      }, () => { this.#scheduleReconnect() })
    }, this.#init.reconnectMs)
  }

  #onLine (raw: string): void {
    const line = raw.trim()
    if (line === '') return
    const { format, jsonPath } = this.#init.parser
    if (format === 'line') {
      this.accept(line)
    } else if (format === 'jsonl') {
      let json: unknown
      try {
        json = JSON.parse(line)
      } catch {
        this.reject(new BadReadingError(`sensor ${this.id}: line is not JSON: ${JSON.stringify(line.slice(0, 60))}`, this.id, 'parse'))
        return
      }
      const value = getPath(json, jsonPath!)
      if (value === undefined) {
        this.reject(new BadReadingError(`sensor ${this.id}: no ${jsonPath} in ${JSON.stringify(line.slice(0, 60))}`, this.id, 'parse'))
        return
      }
      this.accept(value)
    } else {
      const m = this.#pattern!.exec(line)
      const value = m?.groups?.value ?? m?.[1]
      if (value == null) {
        this.reject(new BadReadingError(`sensor ${this.id}: line does not match the pattern: ${JSON.stringify(line.slice(0, 60))}`, this.id, 'parse'))
        return
      }
      this.accept(value)
    }
  }
}
