import { commonJs } from '../commonjs.ts'
import { DeliveryError } from './errors.ts'
import type { MqttClient } from 'mqtt'

export interface MqttSettings {
  url: string
  username?: string
  password?: string
}

/**
 * One MQTT 5 connection for `mqtt.publish` actions, opened on first use.
 * While the broker is unreachable a publish fails at once (instead of
 * waiting in mqtt.js's memory queue, which a restart would lose) and the
 * outbox retries it. The job id travels as the user property
 * `idempotency-key` so subscribers can drop repeats.
 */
export class MqttChannel {
  readonly #settings: MqttSettings
  #client?: MqttClient
  #connecting?: Promise<MqttClient>

  constructor (settings: MqttSettings) {
    this.#settings = settings
  }

  async publish (id: string, topic: string, payload: string, options: { qos: 0 | 1 | 2, retain: boolean }, signal: AbortSignal): Promise<void> {
    const client = await this.#get()
    if (!client.connected) throw new DeliveryError(`MQTT broker ${this.#settings.url} is unreachable`)
    const aborted = new Promise<never>((_resolve, reject) => {
      signal.addEventListener('abort', () => { reject(new DeliveryError('MQTT publish timed out')) }, { once: true })
    })
    try {
      await Promise.race([client.publishAsync(topic, payload, { ...options, properties: { userProperties: { 'idempotency-key': id } } }), aborted])
    } catch (err: any) {
      if (err instanceof DeliveryError) throw err
      throw new DeliveryError(`MQTT publish to ${topic}: ${err.message}`, { cause: err })
    }
  }

  async close (): Promise<void> {
    await this.#client?.endAsync(true)
  }

  async #get (): Promise<MqttClient> {
    if (this.#client != null) return this.#client
    this.#connecting ??= (async () => {
      const { connect } = commonJs(await import('mqtt'))
      const s = this.#settings
      const client = connect(s.url, {
        protocolVersion: 5,
        reconnectPeriod: 1000,
        connectTimeout: 5000,
        queueQoSZero: false,
        clientId: `gatemesh-actions-${Math.random().toString(16).slice(2, 10)}`,
        ...(s.username == null ? {} : { username: s.username }),
        ...(s.password == null ? {} : { password: s.password })
      })
      client.on('error', () => {})
      // give the first connection a moment, so the first publish does not fail just for being first
      await new Promise<void>(resolve => {
        const done = (): void => { clearTimeout(timer); resolve() }
        const timer = setTimeout(done, 2000)
        client.once('connect', done)
      })
      this.#client = client
      return client
    })()
    return await this.#connecting
  }
}
