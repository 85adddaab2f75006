import type { GpioConstructor, GpioLike } from '../../sensors/gpio.ts'

type BinaryValue = 0 | 1
type ValueCallback = (err: Error | null | undefined, value: BinaryValue) => void

/**
 * An onoff-compatible Gpio for machines without /sys/class/gpio: the real
 * drivers run against it, and the test drives the "electrical" side with
 * `FakeBoard.set(pin, level)` (which raises interrupts like epoll would).
 */
export class FakeBoard {
  readonly pins = new Map<number, FakePin>()
  /** every level written to an output, in order: [pin, value] */
  readonly writes: Array<[number, BinaryValue]> = []

  /** Change an input's level; watchers hear about it when the edge matches. */
  set (pin: number, level: BinaryValue): void {
    const p = this.pins.get(pin)
    if (p == null) throw new Error(`pin ${pin} is not exported`)
    const previous = p.level
    p.level = level
    if (previous === level) return
    const rising = level === 1
    if (p.edge === 'both' || (p.edge === 'rising' && rising) || (p.edge === 'falling' && !rising)) {
      for (const cb of p.watchers) cb(null, level)
    }
  }

  /** A burst of edges as a bouncing contact makes, ending on `level`. */
  bounce (pin: number, level: BinaryValue, edges = 5): void {
    for (let i = edges; i > 0; i--) this.set(pin, (i % 2 === 0 ? level : 1 - level) as BinaryValue)
    this.set(pin, level)
  }

  gpioClass (): GpioConstructor {
    const board = this
    return class FakeGpio implements GpioLike {
      static readonly accessible = true
      readonly #pin: FakePin

      constructor (gpio: number, direction: 'in' | 'out' | 'high' | 'low', edge: 'none' | 'rising' | 'falling' | 'both' = 'none') {
        if (board.pins.get(gpio)?.exported === true) throw Object.assign(new Error(`EBUSY: pin ${gpio} already exported`), { code: 'EBUSY' })
        this.#pin = { level: direction === 'high' ? 1 : 0, edge, direction, watchers: new Set(), exported: true }
        board.pins.set(gpio, this.#pin)
        this.#gpio = gpio
      }

      readonly #gpio: number

      async read (): Promise<BinaryValue> { return this.#pin.level }
      async write (value: BinaryValue): Promise<void> {
        this.#pin.level = value
        board.writes.push([this.#gpio, value])
      }

      watch (callback: ValueCallback): void { this.#pin.watchers.add(callback) }
      unwatchAll (): void { this.#pin.watchers.clear() }
      unexport (): void { this.#pin.exported = false }
    }
  }
}

interface FakePin {
  level: BinaryValue
  edge: string
  direction: string
  watchers: Set<ValueCallback>
  exported: boolean
}
