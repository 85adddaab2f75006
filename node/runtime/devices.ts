import { createActuator, createSensor, type AbstractSensor, type GpioActuator, type GpioConstructor, type SensorInfo } from '../../sensors/index.ts'
import type { ActuatorSpec, SensorSpec } from '../../sensors/schema.ts'
import type { RuntimeMetrics } from '../metrics/runtime-metrics.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

export interface DevicesComponents {
  logger: Logger
  metrics?: Pick<RuntimeMetrics, 'sensorReadings' | 'sensorRejected'>
  /** onoff-compatible Gpio class, for tests */
  gpio?: GpioConstructor
}

export interface DeviceState extends SensorInfo {
  status: string
  error?: string
  readings: number
  rejected: number
  lastReading?: { value: number, ts: number }
}

/**
 * The sensors and actuators declared in the agent config. A device that
 * fails to open is logged and reported in status, never fatal: the rest of
 * the node keeps working.
 */
export class Devices implements Startable {
  readonly sensors = new Map<string, AbstractSensor>()
  readonly actuators = new Map<string, GpioActuator>()
  readonly #errors = new Map<string, string>()
  readonly #log: Logger

  constructor (components: DevicesComponents, sensors: SensorSpec[], actuators: ActuatorSpec[]) {
    this.#log = components.logger
    const options = { ...(components.gpio == null ? {} : { gpio: components.gpio }) }
    for (const spec of sensors) {
      const sensor = createSensor(spec, { ...options, logger: this.#log.child({ sensor: spec.id }) })
      sensor.addEventListener('reading', () => { components.metrics?.sensorReadings.inc({ sensor: spec.id }) })
      sensor.addEventListener('rejected', evt => { components.metrics?.sensorRejected.inc({ sensor: spec.id, reason: evt.detail.reason }) })
      this.sensors.set(spec.id, sensor)
    }
    for (const spec of actuators) this.actuators.set(spec.id, createActuator(spec, options))
  }

  async start (): Promise<void> {
    const open = async (id: string, device: { open(): Promise<void> }): Promise<void> => {
      try {
        await device.open()
        this.#log.info({ device: id }, 'device open')
      } catch (err: any) {
        this.#errors.set(id, err.message)
        this.#log.error({ device: id, code: err.code, err: err.message }, 'device failed to open')
      }
    }
    await Promise.all([...this.sensors].map(async ([id, s]) => { await open(id, s) }))
    await Promise.all([...this.actuators].map(async ([id, a]) => { await open(id, a) }))
  }

  async stop (): Promise<void> {
    await Promise.allSettled([...this.sensors.values()].map(async s => { await s.close() }))
    await Promise.allSettled([...this.actuators.values()].map(async a => { await a.close() }))
  }

  /** What `node/<self>` advertises. */
  info (): SensorInfo[] {
    return [...this.sensors.values()].map(s => s.info())
  }

  state (): DeviceState[] {
    return [...this.sensors.values()].map(s => {
      const stats = s.stats()
      const state: DeviceState = { ...s.info(), status: s.status, readings: stats.readings, rejected: stats.rejected }
      const err = this.#errors.get(s.id)
      if (err != null && s.status !== 'open') state.error = err
      if (stats.lastReading != null) state.lastReading = { value: stats.lastReading.value, ts: stats.lastReading.ts }
      return state
    })
  }
}
