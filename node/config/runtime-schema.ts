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
  attemptTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 15_000 }),
  /** a job that was being delivered when the agent died this many times is dead-lettered, not tried again */
  maxCrashes: Type.Integer({ minimum: 1, maximum: 100, default: 2 }),
  /** how long a job id is remembered so a repeat of the same action of the same request is dropped (a retried predict) */
  dedupeWindowMs: Type.Integer({ minimum: 1000, maximum: 30 * 86_400_000, default: 86_400_000 }),
  /** job ids remembered at most (oldest forgotten first): the window's bound on memory and disk */
  dedupeMaxEntries: Type.Integer({ minimum: 100, maximum: 1_000_000, default: 10_000 })
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
  /** V8 heap cap of a script (--max-old-space-size); as much again is allowed outside the heap (Buffers), enforced with RLIMIT_AS */
  maxMemoryMb: Type.Integer({ minimum: 8, maximum: 4096, default: 64 }),
  /** bytes an instance's scratch directory may hold (a tmpfs of this size while the script runs) */
  scratchMb: Type.Integer({ minimum: 1, maximum: 16_384, default: 64 }),
  /** the user scripts run as when the agent runs as root; created as a system user when missing */
  user: Type.String({ minLength: 1, maxLength: 32, pattern: '^[a-z_][a-z0-9_-]*$', default: 'gatemesh-script' }),
  /**
   * auto: the strongest isolation this machine offers, said at start and in /v1/status;
   * required: refuse to run scripts where no namespaces are available rather than run them unisolated
   */
  isolation: Type.Union([Type.Literal('auto'), Type.Literal('required')], { default: 'auto' })
}, { additionalProperties: false, default: {} })
