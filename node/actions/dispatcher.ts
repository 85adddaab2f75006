import { EmailChannel, type SmtpSettings } from './email.ts'
import { PermanentDeliveryError } from './errors.ts'
import { idempotencyHeaders, post } from './http.ts'
import { MqttChannel, type MqttSettings } from './mqtt.ts'
import { DEFAULT_SCRATCH_BYTES, runScript } from './script.ts'
import type { Sandbox } from './sandbox/sandbox.ts'
import type { OutboxJob } from '../outbox/outbox.ts'
import type { GpioActuator } from '../../sensors/gpio.ts'
import type { Logger } from 'pino'

export interface NotificationSettings {
  smtp?: SmtpSettings
  sms?: { url: string, accountSid: string, authToken: string, from: string }
  mqtt?: MqttSettings
}

export interface DispatcherComponents {
  logger: Pick<Logger, 'info' | 'warn' | 'error' | 'debug' | 'child'>
  actuators: Map<string, GpioActuator>
  /** the sandbox action scripts run in (probed on first use) */
  sandbox?: () => Promise<Sandbox>
}

export interface DispatcherInit {
  notifications?: NotificationSettings
  scripts?: { timeoutMs?: number, maxMemoryMb?: number, scratchMb?: number, isolation?: 'auto' | 'required' }
}

/**
 * Carries out one outbox job on its channel. Channels with a client
 * (SMTP, MQTT) are created on first use. A job naming a channel this node
 * has no settings for, or an actuator it does not have, fails permanently:
 * retrying cannot make it appear.
 */
export class ActionDispatcher {
  readonly #c: DispatcherComponents
  readonly #init: DispatcherInit
  readonly #log: Pick<Logger, 'info' | 'warn' | 'error'>
  #email?: EmailChannel
  #mqtt?: MqttChannel

  constructor (components: DispatcherComponents, init: DispatcherInit = {}) {
    this.#c = components
    this.#init = init
    this.#log = components.logger.child({ service: 'actions' })
  }

  readonly deliver = async (job: OutboxJob, signal: AbortSignal): Promise<void> => {
    const a = job.action
    const n = this.#init.notifications ?? {}
    switch (a.type) {
      case 'log':
        this.#log[a.level]({ instance: job.instance, rule: job.rule, job: job.id, event: job.event }, a.message)
        return
      case 'gpio.write': {
        const actuator = this.#c.actuators.get(a.actuator)
        if (actuator == null) throw new PermanentDeliveryError(`no actuator ${a.actuator} on this node`)
        await actuator.write(a.value, a.pulseMs)
        return
      }
      case 'http.post': {
        const body = a.body ?? JSON.stringify(job.event)
        const json = isJson(body)
        await post(a.url, { headers: { 'content-type': json ? 'application/json' : 'text/plain; charset=utf-8', ...a.headers, ...idempotencyHeaders(job.id) }, body, signal })
        return
      }
      case 'sms': {
        if (n.sms == null) throw new PermanentDeliveryError('no SMS gateway configured (config.notifications.sms)')
        const form = new URLSearchParams({ To: a.to, From: n.sms.from, Body: a.body })
        const auth = Buffer.from(`${n.sms.accountSid}:${n.sms.authToken}`).toString('base64')
        await post(n.sms.url, { headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${auth}`, ...idempotencyHeaders(job.id) }, body: form.toString(), signal })
        return
      }
      case 'email':
        if (n.smtp == null) throw new PermanentDeliveryError('no SMTP server configured (config.notifications.smtp)')
        this.#email ??= new EmailChannel(n.smtp)
        await this.#email.send(job.id, a, signal)
        return
      case 'mqtt.publish':
        if (n.mqtt == null) throw new PermanentDeliveryError('no MQTT broker configured (config.notifications.mqtt)')
        this.#mqtt ??= new MqttChannel(n.mqtt)
        await this.#mqtt.publish(job.id, a.topic, a.payload ?? JSON.stringify(job.event), { qos: a.qos, retain: a.retain }, signal)
        return
      case 'script': {
        if (job.script == null) throw new PermanentDeliveryError('the bundle has no action script')
        const scripts = this.#init.scripts ?? {}
        const sandbox = await this.#c.sandbox?.()
        if (scripts.isolation === 'required' && sandbox?.isolation.mode === 'none') {
          throw new PermanentDeliveryError(`scripts must run isolated (config.scripts.isolation: required), and this machine offers no isolation: ${sandbox.isolation.missing.join('; ')}`)
        }
        await runScript({
          path: job.script.path,
          scratch: job.script.scratch,
          network: job.script.network ?? [],
          scratchBytes: scripts.scratchMb == null ? DEFAULT_SCRATCH_BYTES : scripts.scratchMb * 1024 * 1024,
          ...(sandbox == null ? {} : { sandbox }),
          input: job.event,
          args: a.args,
          env: { GATEMESH_IDEMPOTENCY_KEY: job.id, GATEMESH_INSTANCE: job.instance, GATEMESH_RULE: job.rule },
          ...(this.#init.scripts?.timeoutMs == null ? {} : { timeoutMs: this.#init.scripts.timeoutMs }),
          ...(this.#init.scripts?.maxMemoryMb == null ? {} : { maxMemoryMb: this.#init.scripts.maxMemoryMb }),
          logger: this.#log
        })
        return
      }
    }
  }

  async close (): Promise<void> {
    this.#email?.close()
    await this.#mqtt?.close()
  }
}

function isJson (text: string): boolean {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}
