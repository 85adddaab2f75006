import { SensorConfigError } from './errors.ts'
import { GpioActuator, GpioSensor, type GpioConstructor } from './gpio.ts'
import { GpiodSensor } from './gpiod.ts'
import { MqttSensor } from './mqtt.ts'
import { SerialSensor } from './serial.ts'
import { SimulatedSensor } from './simulated.ts'
import type { AbstractSensor, SensorLogger } from './sensor.ts'
import type { ActuatorSpec, SensorSpec } from './schema.ts'

export { AbstractSensor, type Reading, type SensorInfo, type SensorStats } from './sensor.ts'
export { GpioActuator, type GpioConstructor, type GpioLike } from './gpio.ts'
export type { ActuatorSpec, SensorSpec } from './schema.ts'

export interface DriverOptions {
  logger?: SensorLogger
  /** onoff-compatible Gpio class (tests); onoff itself when absent */
  gpio?: GpioConstructor
  /** directory holding libgpiod's gpiomon, gpioget and gpioset (tests); PATH when absent */
  gpiodBin?: string
}

/**
 * Build (not open) the driver for a validated declaration. Drivers load
 * their device libraries (onoff, serialport, mqtt) only when opened, so an
 * agent without such sensors never pays for them.
 */
export function createSensor (spec: SensorSpec, options: DriverOptions = {}): AbstractSensor {
  const { id, measures, unit, geo, min, max } = spec
  const base = { id, ...(measures == null ? {} : { measures }), ...(unit == null ? {} : { unit }), ...(geo == null ? {} : { geo }), ...(min == null ? {} : { min }), ...(max == null ? {} : { max }), ...(options.logger == null ? {} : { logger: options.logger }) }
  switch (spec.type) {
    case 'gpio':
      if (spec.driver === 'chardev') {
        if (spec.chip == null || spec.line == null) throw new SensorConfigError(`sensor ${id}: the chardev driver needs chip and line`, id, spec.chip == null ? 'chip' : 'line')
        return new GpiodSensor({ ...base, chip: spec.chip, line: spec.line, edge: spec.edge, debounceMs: spec.debounceMs, activeLow: spec.activeLow, bias: spec.bias, ...(options.gpiodBin == null ? {} : { bin: options.gpiodBin }) })
      }
      if (spec.pin == null) throw new SensorConfigError(`sensor ${id}: the sysfs driver needs pin`, id, 'pin')
      return new GpioSensor({ ...base, pin: spec.pin, edge: spec.edge, debounceMs: spec.debounceMs, activeLow: spec.activeLow, ...(options.gpio == null ? {} : { gpio: options.gpio }) })
    case 'serial':
      return new SerialSensor({ ...base, path: spec.path, baudRate: spec.baudRate, parser: spec.parser, reconnectMs: spec.reconnectMs })
    case 'mqtt': {
      const { type: _t, id: _i, measures: _k, unit: _u, geo: _g, min: _mi, max: _ma, ...rest } = spec
      return new MqttSensor({ ...base, ...rest })
    }
    case 'simulated': {
      const { type: _t, id: _i, measures: _k, unit: _u, geo: _g, min: _mi, max: _ma, ...rest } = spec
      return new SimulatedSensor({ ...base, ...rest })
    }
    default:
      throw new SensorConfigError(`sensor ${id}: unknown type ${JSON.stringify((spec as { type: unknown }).type)}`, id, 'type')
  }
}

export function createActuator (spec: ActuatorSpec, options: DriverOptions = {}): GpioActuator {
  return new GpioActuator({ ...spec, ...(options.gpio == null ? {} : { gpio: options.gpio }), ...(options.gpiodBin == null ? {} : { gpiodBin: options.gpiodBin }), ...(options.logger == null ? {} : { logger: options.logger }) })
}
