import { Type, type Static, type TObject } from '@sinclair/typebox'

/**
 * Actions a rule can trigger. Text fields marked "template" may hold
 * `{{path}}` placeholders filled from the event (`{{class}}`, `{{score}}`,
 * `{{reading.value}}`, `{{model}}` …) when the action is queued, so every
 * retry sends exactly the same thing.
 */

const Template = (max = 16 * 1024): ReturnType<typeof Type.String> => Type.String({ minLength: 1, maxLength: max })

export const LogActionSchema = Type.Object({
  type: Type.Literal('log'),
  level: Type.Union([Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')], { default: 'info' }),
  /** template */
  message: Template()
}, { additionalProperties: false })

export const GpioWriteActionSchema = Type.Object({
  type: Type.Literal('gpio.write'),
  /** id of an actuator in the agent config */
  actuator: Type.String({ minLength: 1, maxLength: 64 }),
  value: Type.Union([Type.Literal(0), Type.Literal(1)]),
  /** set back to the opposite level after this long */
  pulseMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 3_600_000 }))
}, { additionalProperties: false })

export const MqttPublishActionSchema = Type.Object({
  type: Type.Literal('mqtt.publish'),
  /** template */
  topic: Template(1024),
  /** template; the event as JSON when absent */
  payload: Type.Optional(Template()),
  qos: Type.Union([Type.Literal(0), Type.Literal(1), Type.Literal(2)], { default: 1 }),
  retain: Type.Boolean({ default: false })
}, { additionalProperties: false })

export const HttpPostActionSchema = Type.Object({
  type: Type.Literal('http.post'),
  url: Type.String({ pattern: '^https?://', maxLength: 2048 }),
  headers: Type.Record(Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' }), Type.String({ maxLength: 4096 }), { default: {} }),
  /** template, sent as application/json when it parses as JSON; the event as JSON when absent */
  body: Type.Optional(Template(256 * 1024))
}, { additionalProperties: false })

export const SmsActionSchema = Type.Object({
  type: Type.Literal('sms'),
  /** E.164 phone number */
  to: Type.String({ pattern: '^\\+?[0-9]{3,20}$' }),
  /** template */
  body: Template(1600)
}, { additionalProperties: false })

export const EmailActionSchema = Type.Object({
  type: Type.Literal('email'),
  to: Type.Union([Type.String({ minLength: 3, maxLength: 320 }), Type.Array(Type.String({ minLength: 3, maxLength: 320 }), { minItems: 1, maxItems: 100 })]),
  /** template */
  subject: Template(998),
  /** template */
  text: Template(256 * 1024)
}, { additionalProperties: false })

export const ScriptActionSchema = Type.Object({
  type: Type.Literal('script'),
  /** extra command-line arguments for the bundle's action script */
  args: Type.Array(Type.String({ maxLength: 1024 }), { default: [], maxItems: 32 })
}, { additionalProperties: false })

export const ACTION_SCHEMAS: Record<string, TObject> = {
  log: LogActionSchema,
  'gpio.write': GpioWriteActionSchema,
  'mqtt.publish': MqttPublishActionSchema,
  'http.post': HttpPostActionSchema,
  sms: SmsActionSchema,
  email: EmailActionSchema,
  script: ScriptActionSchema
}

export type LogAction = Static<typeof LogActionSchema>
export type GpioWriteAction = Static<typeof GpioWriteActionSchema>
export type MqttPublishAction = Static<typeof MqttPublishActionSchema>
export type HttpPostAction = Static<typeof HttpPostActionSchema>
export type SmsAction = Static<typeof SmsActionSchema>
export type EmailAction = Static<typeof EmailActionSchema>
export type ScriptAction = Static<typeof ScriptActionSchema>
export type ActionSpec = LogAction | GpioWriteAction | MqttPublishAction | HttpPostAction | SmsAction | EmailAction | ScriptAction
export type ActionType = ActionSpec['type']
