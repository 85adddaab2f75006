import { Type, type Static, type TObject } from '@sinclair/typebox'

/**
 * Declarations of sensors and actuators in the agent's config. Every object
 * is closed; each driver type has its own schema so an error can name the
 * exact field (`config.sensors[2].baudRate`).
 */

export const SENSOR_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'

const GeoSchema = Type.Object({
  lat: Type.Number({ minimum: -90, maximum: 90 }),
  lon: Type.Number({ minimum: -180, maximum: 180 }),
  alt: Type.Optional(Type.Number())
}, { additionalProperties: false })

const common = {
  id: Type.String({ pattern: SENSOR_ID_PATTERN }),
  /** what the sensor measures, e.g. `temperature` or `door`; deployments require sensors by it */
  measures: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' })),
  unit: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
  geo: Type.Optional(GeoSchema),
  /** readings below are counted as garbage and skipped */
  min: Type.Optional(Type.Number()),
  /** readings above are counted as garbage and skipped */
  max: Type.Optional(Type.Number())
}

const Pin = Type.Integer({ minimum: 0, maximum: 4095 })

/**
 * Which kernel interface drives a GPIO line: `sysfs` (/sys/class/gpio,
 * through onoff; lines by global `pin` number) or `chardev` (the GPIO
 * character device /dev/gpiochipN, through libgpiod's tools; lines by
 * `chip` and `line` offset). Newer kernels build without sysfs GPIO.
 */
const GpioDriver = Type.Union([Type.Literal('sysfs'), Type.Literal('chardev')], { default: 'sysfs' })
/** `gpiochip0`, `0` or `/dev/gpiochip0` (what libgpiod's tools accept) */
const Chip = Type.String({ pattern: '^(/dev/)?(gpiochip)?[0-9]{1,3}$' })
const Line = Type.Integer({ minimum: 0, maximum: 4095 })
/** sysfs needs `pin`; chardev needs `chip` and `line`: a missing one is named in the error */
const byDriver = {
  if: { properties: { driver: { const: 'chardev' } }, required: ['driver'] },
  then: { properties: { chip: Chip, line: Line }, required: ['chip', 'line'] },
  else: { properties: { pin: Pin }, required: ['pin'] }
}

export const GpioSensorSchema = Type.Object({
  ...common,
  type: Type.Literal('gpio'),
  driver: GpioDriver,
  /** sysfs: the global GPIO number */
  pin: Type.Optional(Pin),
  /** chardev: the chip */
  chip: Type.Optional(Chip),
  /** chardev: the line's offset on the chip */
  line: Type.Optional(Line),
  edge: Type.Union([Type.Literal('rising'), Type.Literal('falling'), Type.Literal('both')], { default: 'both' }),
  /** ignore further edges for this long after one (contact bounce) */
  debounceMs: Type.Integer({ minimum: 0, maximum: 10_000, default: 10 }),
  activeLow: Type.Boolean({ default: false }),
  /** chardev only: the line's pull resistor (sysfs cannot set it) */
  bias: Type.Union([Type.Literal('as-is'), Type.Literal('disable'), Type.Literal('pull-up'), Type.Literal('pull-down')], { default: 'as-is' })
}, { additionalProperties: false, ...byDriver })

/** JSON path into a message: `a.b[0].c` (dots and numeric indexes). */
const JsonPath = Type.String({ minLength: 1, maxLength: 256, pattern: '^[A-Za-z0-9_$-]+(\\[[0-9]+\\])*(\\.[A-Za-z0-9_$-]+(\\[[0-9]+\\])*)*$' })

export const SerialSensorSchema = Type.Object({
  ...common,
  type: Type.Literal('serial'),
  path: Type.String({ minLength: 1, maxLength: 256 }),
  baudRate: Type.Integer({ minimum: 50, maximum: 4_000_000, default: 9600 }),
  parser: Type.Object({
    /** `line`: each line is a number; `jsonl`: each line is JSON, value at `jsonPath`; `regex`: first group (or group `value`) of `pattern` */
    format: Type.Union([Type.Literal('line'), Type.Literal('jsonl'), Type.Literal('regex')], { default: 'line' }),
    jsonPath: Type.Optional(JsonPath),
    pattern: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
    delimiter: Type.String({ minLength: 1, maxLength: 4, default: '\n' })
  }, { additionalProperties: false, default: {} }),
  /** retry opening the device this often after it disappears */
  reconnectMs: Type.Integer({ minimum: 50, maximum: 600_000, default: 1000 })
}, { additionalProperties: false })

export const MqttSensorSchema = Type.Object({
  ...common,
  type: Type.Literal('mqtt'),
  url: Type.String({ pattern: '^(mqtts?|wss?|tcp)://' }),
  topic: Type.String({ minLength: 1, maxLength: 1024 }),
  /** where the value sits in a JSON payload; without it the payload is a number as text */
  jsonPath: Type.Optional(JsonPath),
  qos: Type.Union([Type.Literal(0), Type.Literal(1), Type.Literal(2)], { default: 0 }),
  username: Type.Optional(Type.String({ maxLength: 256 })),
  password: Type.Optional(Type.String({ maxLength: 1024 })),
  reconnectMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 1000 })
}, { additionalProperties: false })

export const SimulatedSensorSchema = Type.Object({
  ...common,
  type: Type.Literal('simulated'),
  waveform: Type.Union([Type.Literal('sine'), Type.Literal('randomWalk'), Type.Literal('noise'), Type.Literal('csv')], { default: 'sine' }),
  /** readings per second */
  rateHz: Type.Number({ exclusiveMinimum: 0, maximum: 10_000, default: 1 }),
  offset: Type.Number({ default: 0 }),
  amplitude: Type.Number({ default: 1 }),
  /** sine period */
  periodMs: Type.Number({ exclusiveMinimum: 0, default: 60_000 }),
  /** standard deviation of gaussian noise added to every reading (the step size for randomWalk) */
  noise: Type.Number({ minimum: 0, default: 0 }),
  spikes: Type.Optional(Type.Object({
    /** a spike every N readings */
    every: Type.Optional(Type.Integer({ minimum: 1 })),
    /** or with this probability per reading */
    probability: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    magnitude: Type.Number()
  }, { additionalProperties: false })),
  csv: Type.Optional(Type.Object({
    path: Type.String({ minLength: 1 }),
    /** column name (header row) or 0-based index */
    column: Type.Union([Type.String({ minLength: 1 }), Type.Integer({ minimum: 0 })], { default: 0 }),
    header: Type.Boolean({ default: true }),
    loop: Type.Boolean({ default: true })
  }, { additionalProperties: false })),
  /** PRNG seed, for reproducible runs */
  seed: Type.Integer({ default: 1 })
}, { additionalProperties: false })

export const GpioActuatorSchema = Type.Object({
  id: Type.String({ pattern: SENSOR_ID_PATTERN }),
  type: Type.Literal('gpio'),
  driver: GpioDriver,
  pin: Type.Optional(Pin),
  chip: Type.Optional(Chip),
  line: Type.Optional(Line),
  activeLow: Type.Boolean({ default: false }),
  /** level written when the actuator opens */
  initial: Type.Union([Type.Literal(0), Type.Literal(1)], { default: 0 })
}, { additionalProperties: false, ...byDriver })

export const SENSOR_SCHEMAS: Record<string, TObject> = {
  gpio: GpioSensorSchema,
  serial: SerialSensorSchema,
  mqtt: MqttSensorSchema,
  simulated: SimulatedSensorSchema
}

export const SensorSpecSchema = Type.Union([GpioSensorSchema, SerialSensorSchema, MqttSensorSchema, SimulatedSensorSchema])
export const ActuatorSpecSchema = GpioActuatorSchema

export type GpioSensorSpec = Static<typeof GpioSensorSchema>
export type SerialSensorSpec = Static<typeof SerialSensorSchema>
export type MqttSensorSpec = Static<typeof MqttSensorSchema>
export type SimulatedSensorSpec = Static<typeof SimulatedSensorSchema>
export type SensorSpec = Static<typeof SensorSpecSchema>
export type ActuatorSpec = Static<typeof ActuatorSpecSchema>
