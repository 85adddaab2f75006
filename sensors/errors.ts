/** Errors of sensor and actuator drivers. Match on `code`, never on text. */
export class SensorError extends Error {
  readonly code: string = 'ERR_SENSOR'
  override readonly name: string = 'SensorError'
  /** id of the sensor or actuator concerned */
  readonly sensorId: string

  constructor (message: string, sensorId: string, options?: ErrorOptions) {
    super(message, options)
    this.sensorId = sensorId
  }
}

/** A sensor declaration is invalid; `field` names the offending path. */
export class SensorConfigError extends SensorError {
  override readonly code = 'ERR_SENSOR_CONFIG'
  override readonly name = 'SensorConfigError'
  readonly field: string

  constructor (message: string, sensorId: string, field: string, options?: ErrorOptions) {
    super(message, sensorId, options)
    this.field = field
  }
}

/** The driver is not open (never opened, closing or closed). */
export class SensorNotOpenError extends SensorError {
  override readonly code = 'ERR_SENSOR_NOT_OPEN'
  override readonly name = 'SensorNotOpenError'
}

/** GPIO is not accessible on this machine (no /sys/class/gpio, no permission, or onoff will not load). */
export class GpioUnavailableError extends SensorError {
  override readonly code = 'ERR_GPIO_UNAVAILABLE'
  override readonly name = 'GpioUnavailableError'
}

/** A device produced something that is not a usable reading (bad line, NaN, out of range). */
export class BadReadingError extends SensorError {
  override readonly code = 'ERR_BAD_READING'
  override readonly name = 'BadReadingError'
  /** why the reading was refused: parse, nan, range */
  readonly reason: 'parse' | 'nan' | 'range'

  constructor (message: string, sensorId: string, reason: 'parse' | 'nan' | 'range', options?: ErrorOptions) {
    super(message, sensorId, options)
    this.reason = reason
  }
}
