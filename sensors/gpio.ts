import { GpioUnavailableError, SensorConfigError, SensorError, SensorNotOpenError } from './errors.ts'
import { openGpiodOutput, type OutputLine } from './gpiod.ts'
import { AbstractSensor, type SensorInit, type SensorLogger } from './sensor.ts'
import type { ActuatorSpec, GpioSensorSpec } from './schema.ts'

type BinaryValue = 0 | 1
type ValueCallback = (err: Error | null | undefined, value: BinaryValue) => void

/** The part of onoff's `Gpio` we use; tests inject a fake with this shape. */
export interface GpioLike {
  read(): Promise<BinaryValue>
  write(value: BinaryValue): Promise<void>
  watch(callback: ValueCallback): void
  unwatchAll(): void
  unexport(): void
}

export interface GpioConstructor {
  new (gpio: number, direction: 'in' | 'out' | 'high' | 'low', edge?: 'none' | 'rising' | 'falling' | 'both', options?: { debounceTimeout?: number, activeLow?: boolean }): GpioLike
  readonly accessible: boolean
}

/**
 * onoff, loaded on first use (it pulls in a native epoll module). Fails with
 * a GpioUnavailableError saying why when the machine has no usable GPIO.
 */
export async function loadOnoff (id: string): Promise<GpioConstructor> {
  let mod: { Gpio: GpioConstructor }
  try {
    mod = await import('onoff') as unknown as { Gpio: GpioConstructor }
  } catch (err: any) {
    // images compile epoll for their CPU; from source, `npm ci` builds it, and a failed build leaves it unloadable
    const why = err.code === 'ERR_MODULE_NOT_FOUND' ? 'onoff is not installed' : err.code === 'ERR_DLOPEN_FAILED' || /epoll\.node|Could not locate the bindings/.test(String(err.message)) ? `its native epoll module does not load: ${String(err.message).split('\n')[0]}` : err.code ?? err.message
    throw new GpioUnavailableError(`gpio ${id}: the onoff driver cannot be loaded (${why})`, id, { cause: err })
  }
  if (!mod.Gpio.accessible) {
    throw new GpioUnavailableError(`gpio ${id}: GPIO is not accessible on this machine (no writable /sys/class/gpio)`, id)
  }
  return mod.Gpio
}

function exportPin (Gpio: GpioConstructor, id: string, pin: number, direction: 'in' | 'high' | 'low', edge: 'none' | 'rising' | 'falling' | 'both', options: { debounceTimeout?: number, activeLow?: boolean }): GpioLike {
  try {
    return new Gpio(pin, direction, edge, options)
  } catch (err: any) {
    // EACCES, EBUSY, EINVAL from sysfs: the pin exists in config but not for us
    throw new GpioUnavailableError(`gpio ${id}: cannot export pin ${pin} (${err.code ?? err.message})`, id, { cause: err })
  }
}

export type GpioSensorInit = SensorInit & Pick<GpioSensorSpec, 'edge' | 'debounceMs' | 'activeLow'> & {
  pin: number
  /** an onoff-compatible Gpio class; onoff itself when absent */
  gpio?: GpioConstructor
}

/**
 * A digital input: one reading (0 or 1) per debounced edge, from onoff's
 * epoll interrupts. Debouncing is done here rather than by onoff so it
 * behaves the same with any Gpio implementation: after an edge, wait until
 * the line has been quiet for `debounceMs`, read the settled level, and
 * report it if it differs from the last one reported.
 */
export class GpioSensor extends AbstractSensor {
  readonly type = 'gpio'
  readonly #init: GpioSensorInit
  #pin?: GpioLike
  #settle?: NodeJS.Timeout
  #level?: number

  constructor (init: GpioSensorInit) {
    super(init)
    this.#init = init
  }

  protected async _open (): Promise<void> {
    const Gpio = this.#init.gpio ?? await loadOnoff(this.id)
    const pin = exportPin(Gpio, this.id, this.#init.pin, 'in', this.#init.edge, { activeLow: this.#init.activeLow })
    this.#pin = pin
    this.#level = undefined
    pin.watch((err, value) => {
      if (err != null) {
        this.log.warn({ sensor: this.id, err: err.message }, 'gpio interrupt error')
        return
      }
      if (this.#init.debounceMs === 0) {
        this.#report(value)
        return
      }
      clearTimeout(this.#settle)
      this.#settle = setTimeout(() => {
        pin.read().then(level => { this.#report(level) }, (err: Error) => {
          this.log.warn({ sensor: this.id, err: err.message }, 'gpio read failed')
        })
      }, this.#init.debounceMs)
    })
  }

  #report (level: number): void {
    if (level === this.#level) return
    this.#level = level
    this.accept(level)
  }

  protected override async _read (): Promise<unknown> {
    return await this.#pin!.read()
  }

  protected async _close (): Promise<void> {
    clearTimeout(this.#settle)
    this.#pin?.unwatchAll()
    this.#pin?.unexport()
    this.#pin = undefined
  }
}

export interface GpioActuatorInit extends Omit<ActuatorSpec, 'type' | 'driver'> {
  /** @default 'sysfs' */
  driver?: ActuatorSpec['driver']
  /** sysfs: an onoff-compatible Gpio class; onoff itself when absent */
  gpio?: GpioConstructor
  /** chardev: directory holding libgpiod's tools; PATH when absent */
  gpiodBin?: string
  logger?: SensorLogger
}

/**
 * A digital output (relay, LED, buzzer): the actuator behind `gpio.write`
 * actions, on either driver (see schema.ts).
 */
export class GpioActuator {
  readonly id: string
  readonly type = 'gpio'
  readonly #init: GpioActuatorInit
  #line?: OutputLine
  #pulse?: NodeJS.Timeout
  #value: BinaryValue

  constructor (init: GpioActuatorInit) {
    this.id = init.id
    this.#init = init
    this.#value = init.initial
  }

  get value (): BinaryValue {
    return this.#value
  }

  async open (): Promise<void> {
    if (this.#line != null) return
    const init = this.#init
    if (init.driver === 'chardev') {
      if (init.chip == null || init.line == null) throw new SensorConfigError(`actuator ${this.id}: the chardev driver needs chip and line`, this.id, init.chip == null ? 'chip' : 'line')
      this.#line = await openGpiodOutput(this.id, { chip: init.chip, line: init.line, activeLow: init.activeLow, bias: 'as-is' }, init.initial, { ...(init.gpiodBin == null ? {} : { bin: init.gpiodBin }), ...(init.logger == null ? {} : { logger: init.logger }) })
      return
    }
    if (init.pin == null) throw new SensorConfigError(`actuator ${this.id}: the sysfs driver needs pin`, this.id, 'pin')
    const Gpio = init.gpio ?? await loadOnoff(this.id)
    // 'high'/'low' set the level atomically with the direction, so a relay never glitches on open
    const pin = exportPin(Gpio, this.id, init.pin, init.initial === 1 ? 'high' : 'low', 'none', { activeLow: init.activeLow })
    this.#line = { write: async v => { await pin.write(v) }, release: async () => { pin.unexport() } }
  }

  /** Set the output; with `pulseMs`, set it back to the opposite level after that long. */
  async write (value: BinaryValue, pulseMs?: number): Promise<void> {
    const line = this.#line
    if (line == null) throw new SensorNotOpenError(`actuator ${this.id} is not open`, this.id)
    if (value !== 0 && value !== 1) throw new SensorError(`actuator ${this.id}: value must be 0 or 1`, this.id)
    clearTimeout(this.#pulse)
    await line.write(value)
    this.#value = value
    if (pulseMs != null && pulseMs > 0) {
      const back: BinaryValue = value === 1 ? 0 : 1
      await new Promise<void>((resolve, reject) => {
        this.#pulse = setTimeout(() => {
          line.write(back).then(() => { this.#value = back; resolve() }, reject)
        }, pulseMs)
      })
    }
  }

  async close (): Promise<void> {
    clearTimeout(this.#pulse)
    const line = this.#line
    this.#line = undefined
    await line?.release()
  }
}
