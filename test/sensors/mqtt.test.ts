import mqtt from 'mqtt'
import t from 'tap'
import { MqttSensor, type MqttSensorInit } from '../../sensors/mqtt.ts'
import { waitFor } from '../helpers/cluster.ts'
import { Mosquitto } from '../helpers/mosquitto.ts'
import { sensorSuite } from './suite.ts'

// a real mosquitto broker on 127.0.0.1
const broker = await Mosquitto.start()
const publisher = await mqtt.connectAsync(broker.url, { reconnectPeriod: 100 })
t.teardown(async () => {
  await publisher.endAsync(true)
  await broker.close()
})

let n = 0
function sensor (init: Partial<MqttSensorInit> & { id: string, topic: string }): MqttSensor {
  return new MqttSensor({ url: broker.url, qos: 0, reconnectMs: 100, ...init })
}

sensorSuite(t, {
  type: 'mqtt',
  async make ({ id, min, max, sequence }) {
    const topic = `suite/${n++}/temp`
    return {
      sensor: sensor({ id, unit: 'u', min, max, topic, qos: 1 }),
      play: async () => {
        for (const v of sequence) await publisher.publishAsync(topic, v, { qos: 1 })
      }
    }
  }
})

t.test('mqtt: JSON payloads with a path, wildcard topics', async t => {
  const s = sensor({ id: 'j', topic: 'site/+/env', jsonPath: 'env.t', qos: 1 })
  const values: number[] = []
  s.addEventListener('reading', e => values.push(e.detail.value))
  await s.open()
  await publisher.publishAsync('site/a/env', JSON.stringify({ env: { t: 20.5 } }), { qos: 1 })
  await publisher.publishAsync('site/b/env', 'garbage', { qos: 1 })
  await publisher.publishAsync('site/c/env', JSON.stringify({ env: { h: 1 } }), { qos: 1 })
  await publisher.publishAsync('site/d/env', JSON.stringify({ env: { t: 21 } }), { qos: 1 })
  await waitFor(() => values.length === 2 && s.stats().rejected === 2, 'two readings, two rejections', 5000, 20)
  t.same(values, [20.5, 21])
  await s.close()
})

t.test('mqtt: the broker goes away and comes back', async t => {
  const s = sensor({ id: 'r', topic: 'restart/temp', qos: 1 })
  const values: number[] = []
  s.addEventListener('reading', e => values.push(e.detail.value))
  await s.open()
  await publisher.publishAsync('restart/temp', '1', { qos: 1 })
  await waitFor(() => values.length === 1, 'first reading', 5000, 20)
  await broker.stop()
  await waitFor(() => !s.connected, 'the sensor to notice', 5000, 20)
  await broker.resume()
  await waitFor(() => s.connected && publisher.connected, 'both clients back', 10_000, 50)
  // the broker kept no session: the sensor must have subscribed again by itself
  await waitFor(async () => {
    await publisher.publishAsync('restart/temp', '2', { qos: 1 })
    return values.includes(2)
  }, 'a reading after the restart', 10_000, 200)
  t.equal(s.status, 'open')
  t.pass('readings resume after the broker restart')
  await s.close()
})
