import { commonJs } from '../node/commonjs.ts'
import { BadReadingError } from './errors.ts'
import { getPath } from './json-path.ts'
import { AbstractSensor, type SensorInit } from './sensor.ts'
import type { MqttSensorSpec } from './schema.ts'
import type { MqttClient } from 'mqtt'

export type MqttSensorInit = SensorInit & Pick<MqttSensorSpec, 'url' | 'topic' | 'jsonPath' | 'qos' | 'username' | 'password' | 'reconnectMs'>

/**
 * Readings from an MQTT topic (wildcards allowed): the payload is a number as
 * text, or JSON with the value at `jsonPath`. mqtt.js reconnects and
 * resubscribes by itself when the broker goes away and comes back.
 */
export class MqttSensor extends AbstractSensor {
  readonly type = 'mqtt'
  readonly #init: MqttSensorInit
  #client?: MqttClient

  constructor (init: MqttSensorInit) {
    super(init)
    this.#init = init
  }

  get connected (): boolean {
    return this.#client?.connected === true
  }

  protected async _open (): Promise<void> {
    const { connectAsync } = commonJs(await import('mqtt'))
    const i = this.#init
    const client = await connectAsync(i.url, {
      reconnectPeriod: i.reconnectMs,
      connectTimeout: 10_000,
      clientId: `gatemesh-sensor-${this.id}-${Math.random().toString(16).slice(2, 8)}`,
      ...(i.username == null ? {} : { username: i.username }),
      ...(i.password == null ? {} : { password: i.password })
    })
    this.#client = client
    client.on('message', (_topic, payload) => { this.#onMessage(payload) })
    client.on('error', err => { this.log.warn({ sensor: this.id, err: err.message }, 'mqtt error') })
    client.on('offline', () => { this.log.warn({ sensor: this.id }, 'mqtt broker unreachable; reconnecting') })
    await client.subscribeAsync(i.topic, { qos: i.qos })
  }

  protected async _close (): Promise<void> {
    await this.#client?.endAsync()
    this.#client = undefined
  }

  #onMessage (payload: Buffer): void {
    const text = payload.toString('utf8')
    const path = this.#init.jsonPath
    if (path == null) {
      this.accept(text)
      return
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      this.reject(new BadReadingError(`sensor ${this.id}: payload is not JSON: ${JSON.stringify(text.slice(0, 60))}`, this.id, 'parse'))
      return
    }
    const value = getPath(json, path)
    if (value === undefined) {
      this.reject(new BadReadingError(`sensor ${this.id}: no ${path} in payload ${JSON.stringify(text.slice(0, 60))}`, this.id, 'parse'))
      return
    }
    this.accept(value)
  }
}
