import { GpioUnavailableError } from './errors.ts'
import { detectTools, getArgs, monitorArgs, parseEvent, parseLevel, runTool, setArgs, startTool, stopTool, type GpiodTools, type LineSettings } from './gpiod-tools.ts'
import { AbstractSensor, type SensorInit, type SensorLogger } from './sensor.ts'
import type { ChildProcess } from 'node:child_process'

type BinaryValue = 0 | 1

/** A tool that is still running this long after it started has requested its line (it exits at once when it cannot). */
const STARTUP_MS = 250
/** Restart a monitor that died (chip unbound, tool killed) after this long. */
const RESTART_MS = 1000
/** gpiomon prints short lines; anything longer is not one of them. */
const MAX_LINE = 256

export type GpiodSensorInit = SensorInit & LineSettings & {
  edge: 'rising' | 'falling' | 'both'
  debounceMs: number
  /** directory holding gpiomon, gpioget and gpioset; PATH when absent */
  bin?: string
}

/**
 * A digital input on the GPIO character device (`/dev/gpiochipN`), through
 * libgpiod's own tools: `gpioget` for the level at open, then one `gpiomon`
 * per line for its edges. No native code runs in the agent, so the driver
 * is the same in every image and follows the libgpiod the device's OS ships.
 * Debouncing is the sysfs driver's: after an edge, wait until the line has
 * been quiet for `debounceMs` and report the settled level if it changed.
 */
export class GpiodSensor extends AbstractSensor {
  readonly type = 'gpio'
  readonly #init: GpiodSensorInit
  #tools?: GpiodTools
  #monitor?: ChildProcess
  #known?: BinaryValue
  #level?: number
  #settle?: NodeJS.Timeout
  #restart?: NodeJS.Timeout
  #open = false

  constructor (init: GpiodSensorInit) {
    super(init)
    this.#init = init
  }

  get #where (): string {
    return `${this.#init.chip} line ${this.#init.line}`
  }

  protected async _open (): Promise<void> {
    this.#tools = await detectTools(this.id, this.#init.bin)
    this.#level = undefined
    this.#known = await this.#readLevel()
    await this.#startMonitor()
    this.#open = true
  }

  async #readLevel (): Promise<BinaryValue> {
    const t = this.#tools!
    let out: string
    try {
      out = await runTool(t, 'gpioget', getArgs(t, this.#init))
    } catch (err: any) {
      throw new GpioUnavailableError(`gpio ${this.id}: cannot read ${this.#where} (${err.message})`, this.id, { cause: err })
    }
    const level = parseLevel(out)
    if (level == null) throw new GpioUnavailableError(`gpio ${this.id}: gpioget printed no level for ${this.#where}: ${JSON.stringify(out.slice(0, 80))}`, this.id)
    return level
  }

  /** Start gpiomon; resolves once it holds the line, rejects with its own message when it cannot. */
  async #startMonitor (): Promise<void> {
    const t = this.#tools!
    const { child, stderr } = startTool(t, 'gpiomon', monitorArgs(t, this.#init, this.#init.edge))
    this.#monitor = child
    let buffered = ''
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (data: string) => {
      buffered += data
      let nl: number
      while ((nl = buffered.indexOf('\n')) >= 0) {
        this.#onLine(buffered.slice(0, nl))
        buffered = buffered.slice(nl + 1)
      }
      if (buffered.length > MAX_LINE) buffered = ''
    })
    const exited = new Promise<string>(resolve => {
      child.once('exit', (code, signal) => { resolve(`${stderr() || `gpiomon exited (${signal ?? code})`}`) })
    })
    const early = await Promise.race([exited, new Promise<undefined>(resolve => setTimeout(() => { resolve(undefined) }, STARTUP_MS))])
    if (early != null) {
      this.#monitor = undefined
      throw new GpioUnavailableError(`gpio ${this.id}: cannot watch ${this.#where} (${early})`, this.id)
    }
    if (this.status !== 'open' && this.status !== 'opening') {
      // closed while a restart was starting it
      this.#monitor = undefined
      await stopTool(child)
      return
    }
    void exited.then(why => {
      if (this.#monitor !== child) return
      this.#monitor = undefined
      if (!this.#open) return
      // the chip went away or someone killed the tool: keep trying, as the serial driver does with its device
      this.log.warn({ sensor: this.id, err: why }, 'gpiomon stopped; restarting')
      this.#scheduleRestart()
    })
  }

  #scheduleRestart (): void {
    clearTimeout(this.#restart)
    this.#restart = setTimeout(() => {
      if (!this.#open) return
      this.#readLevel().then(level => { this.#known = level }).then(async () => { await this.#startMonitor() }).then(() => {
        this.log.info({ sensor: this.id }, 'gpiomon restarted')
      }, (err: Error) => {
        this.log.warn({ sensor: this.id, err: err.message }, 'gpiomon restart failed')
        this.#scheduleRestart()
      })
    }, RESTART_MS)
  }

  #onLine (text: string): void {
    if (!this.#open && this.status !== 'opening') return
    const level = parseEvent(this.#tools!, text, this.#init.line)
    if (level == null) return
    this.#known = level
    if (this.#init.debounceMs === 0) {
      this.#report(level)
      return
    }
    clearTimeout(this.#settle)
    this.#settle = setTimeout(() => { if (this.#known != null) this.#report(this.#known) }, this.#init.debounceMs)
  }

  #report (level: number): void {
    if (level === this.#level || this.status !== 'open') return
    this.#level = level
    this.accept(level)
  }

  /** The line is held by gpiomon, so its level is the last one it reported (or gpioget's at open). */
  protected override async _read (): Promise<unknown> {
    return this.#known
  }

  protected async _close (): Promise<void> {
    this.#open = false
    clearTimeout(this.#settle)
    clearTimeout(this.#restart)
    const monitor = this.#monitor
    this.#monitor = undefined
    if (monitor != null) await stopTool(monitor)
  }
}

export interface OutputLine {
  write(value: BinaryValue): Promise<void>
  release(): Promise<void>
}

/**
 * An output on the character device: a `gpioset` holds the line at a level
 * until it is stopped, so each new level replaces the holder. The line is
 * released for the moment between the two (libgpiod 1.x and 2.x tools have
 * no way to change a held line's level from outside), during which the
 * kernel may drive it to its default.
 */
export async function openGpiodOutput (id: string, settings: LineSettings, initial: BinaryValue, options: { bin?: string, logger?: SensorLogger } = {}): Promise<OutputLine> {
  const t = await detectTools(id, options.bin)
  const where = `${settings.chip} line ${settings.line}`
  let holder: ChildProcess | undefined
  let chain: Promise<void> = Promise.resolve()

  const hold = async (value: BinaryValue): Promise<void> => {
    if (holder != null) await stopTool(holder)
    holder = undefined
    const { child, stderr } = startTool(t, 'gpioset', setArgs(t, settings, value))
    const exited = new Promise<string>(resolve => { child.once('exit', (code, signal) => { resolve(stderr() || `gpioset exited (${signal ?? code})`) }) })
    const early = await Promise.race([exited, new Promise<undefined>(resolve => setTimeout(() => { resolve(undefined) }, STARTUP_MS))])
    if (early != null) throw new GpioUnavailableError(`gpio ${id}: cannot drive ${where} (${early})`, id)
    holder = child
    void exited.then(why => {
      if (holder !== child) return
      holder = undefined
      options.logger?.warn({ actuator: id, err: why }, 'gpioset stopped: the line is no longer driven')
    })
  }

  await hold(initial)
  return {
    // writes queue behind each other: two holders of one line at once would fail with EBUSY
    write: async value => { const next = chain.then(async () => { await hold(value) }); chain = next.catch(() => {}); await next },
    release: async () => {
      await chain
      const child = holder
      holder = undefined
      if (child != null) await stopTool(child)
    }
  }
}
