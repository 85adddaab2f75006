import { Type } from '@sinclair/typebox'
import { ActuatorSpecSchema, type SensorSpec } from '../../sensors/schema.ts'

/**
 * The parts of `config.json` for the local runtime: sensors and actuators,
 * inference workers, the outbox, and the notification channels. Channel
 * credentials live here, on the node, never in a bundle.
 */

/**
 * Each entry is checked (and given its defaults) against its own type's
 * closed schema by `checkDevices`; Ajv ignores defaults inside a union.
 */
export const SensorsSchema = Type.Array(Type.Unsafe<SensorSpec>({ type: 'object' }), { default: [], maxItems: 256 })
export const ActuatorsSchema = Type.Array(ActuatorSpecSchema, { default: [], maxItems: 256 })

export const RuntimeSchema = Type.Object({
  /** inference worker threads per model instance */
  workers: Type.Integer({ minimum: 1, maximum: 32, default: 1 }),
  /** concurrent requests joined into one batch, at most */
  maxBatchSize: Type.Integer({ minimum: 1, maximum: 1024, default: 8 }),
  /** how long the first request of a batch waits for company; 0: only what arrives together (batches still grow while workers are busy) */
  maxBatchDelayMs: Type.Number({ minimum: 0, maximum: 1000, default: 0 }),
  /** `auto`: tensorflow (tfjs-node) if it loads, else wasm, else cpu */
  backend: Type.Union([Type.Literal('auto'), Type.Literal('tensorflow'), Type.Literal('wasm'), Type.Literal('cpu')], { default: 'auto' }),
  /** ONNX Runtime: `auto` is the native binding (onnxruntime-node) if it loads, else its wasm build (onnxruntime-web) */
  onnxBackend: Type.Union([Type.Literal('auto'), Type.Literal('native'), Type.Literal('wasm')], { default: 'auto' }),
  /** a predict for a model that is still loading waits this long before a 503 with Retry-After */
  loadWaitMs: Type.Integer({ minimum: 0, maximum: 60_000, default: 2000 })
}, { additionalProperties: false, default: {} })

export const OutboxSchema = Type.Object({
  /** deliveries tried before a job goes to the dead letters */
  maxAttempts: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
  /** first retry delay; doubles each attempt, with jitter */
  baseDelayMs: Type.Integer({ minimum: 10, maximum: 3_600_000, default: 1000 }),
  maxDelayMs: Type.Integer({ minimum: 10, maximum: 86_400_000, default: 300_000 }),
  /** deliveries in flight at once */
  concurrency: Type.Integer({ minimum: 1, maximum: 256, default: 4 }),
  /** give up on one delivery attempt after this long */
  attemptTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 15_000 })
}, { additionalProperties: false, default: {} })

export const NotificationsSchema = Type.Object({
  smtp: Type.Optional(Type.Object({
    host: Type.String({ minLength: 1 }),
    port: Type.Integer({ minimum: 1, maximum: 65535, default: 587 }),
    /** TLS from the start (port 465); otherwise STARTTLS when offered */
    secure: Type.Boolean({ default: false }),
    user: Type.Optional(Type.String()),
    password: Type.Optional(Type.String()),
    from: Type.String({ minLength: 3 }),
    /** accept self-signed certificates (lab setups) */
    allowSelfSigned: Type.Boolean({ default: false })
  }, { additionalProperties: false })),
  sms: Type.Optional(Type.Object({
    /** the Messages endpoint of a Twilio-compatible gateway */
    url: Type.String({ pattern: '^https?://' }),
    accountSid: Type.String({ minLength: 1 }),
    authToken: Type.String({ minLength: 1 }),
    from: Type.String({ minLength: 1 })
  }, { additionalProperties: false })),
  mqtt: Type.Optional(Type.Object({
    url: Type.String({ pattern: '^(mqtts?|wss?|tcp)://' }),
    username: Type.Optional(Type.String()),
    password: Type.Optional(Type.String())
  }, { additionalProperties: false }))
}, { additionalProperties: false, default: {} })

export const ScriptsSchema = Type.Object({
  /** a script still running after this is killed */
  timeoutMs: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 10_000 }),
  /** V8 heap cap of a script (--max-old-space-size) */
  maxMemoryMb: Type.Integer({ minimum: 8, maximum: 4096, default: 64 })
}, { additionalProperties: false, default: {} })
