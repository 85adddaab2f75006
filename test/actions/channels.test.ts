import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import t from 'tap'
import { ActionDispatcher } from '../../node/actions/dispatcher.ts'
import { Outbox, type EnqueueInput } from '../../node/outbox/outbox.ts'
import { GpioActuator } from '../../sensors/gpio.ts'
import { waitFor } from '../helpers/cluster.ts'
import { FakeBoard } from '../helpers/fake-gpio.ts'
import { Mosquitto } from '../helpers/mosquitto.ts'
import { HttpSink, MailSink, MqttSink } from '../helpers/receivers.ts'
import type { Database } from '../../node/store/db.ts'

// real receivers: an SMTP server, an HTTP server (webhook + Twilio-style SMS), a mosquitto broker
const root = await mkdtemp(join(tmpdir(), 'gatemesh-channels-'))
const mail = await MailSink.start()
const http = await HttpSink.start()
const broker = await Mosquitto.start()
const mqttSink = await MqttSink.start(broker.url, 'alerts/#')
const board = new FakeBoard()
const relay = new GpioActuator({ id: 'relay', pin: 4, activeLow: false, initial: 0, gpio: board.gpioClass() })
await relay.open()
const db = new Level<string, unknown>(join(root, 'db'), { valueEncoding: 'json' }) as Database
await db.open()
const logger = pino({ level: 'silent' })
const dispatcher = new ActionDispatcher({ logger, actuators: new Map([['relay', relay]]) }, {
  notifications: {
    smtp: { host: '127.0.0.1', port: mail.port, secure: false, from: 'gateway@example.test', allowSelfSigned: false },
    sms: { url: `${http.url}/sms`, accountSid: 'AC123', authToken: 'secret-token', from: '+15550001111' },
    mqtt: { url: broker.url }
  }
})
const outbox = new Outbox({ db, logger, deliver: dispatcher.deliver }, { baseDelayMs: 50, maxDelayMs: 200, maxAttempts: 5 })
await outbox.start()
t.teardown(async () => {
  await outbox.stop()
  await dispatcher.close()
  await db.close()
  await mqttSink.close()
  await broker.close()
  await http.stop()
  await mail.stop()
  await rm(root, { recursive: true, force: true })
})

const event = { model: 'anomaly', class: 'anomaly', score: 0.97, ts: Date.now() }
const base = { event, instance: 'anomaly', rule: 'hot' }

t.test('every channel delivers to its real receiver, with the job id as idempotency key', async t => {
  const jobs = await Promise.all(([
    { type: 'email', action: { type: 'email', to: 'ops@example.test', subject: 'anomaly 0.97', text: 'check the boiler' } },
    { type: 'sms', action: { type: 'sms', to: '+15559998888', body: 'anomaly!' } },
    { type: 'http.post', action: { type: 'http.post', url: `${http.url}/hook`, headers: { 'x-site': 'a' } } },
    { type: 'mqtt.publish', action: { type: 'mqtt.publish', topic: 'alerts/anomaly', payload: '{"score":0.97}', qos: 1, retain: false } },
    { type: 'gpio.write', action: { type: 'gpio.write', actuator: 'relay', value: 1, pulseMs: 30 } }
  ] as Array<Pick<EnqueueInput, 'type' | 'action'>>).map(async j => await outbox.enqueue({ ...base, ...j })))
  const [email, sms, hook, pub] = jobs
  await waitFor(() => outbox.size === 0, 'all delivered', 10_000, 20)
  t.match(mail.unique, [{ key: `<${email!.id}@gatemesh>`, to: ['ops@example.test'], subject: 'anomaly 0.97', body: /check the boiler/ }])
  t.match(http.sms.unique, [{ key: sms!.id, to: '+15559998888', from: '+15550001111', body: 'anomaly!' }])
  t.match(http.hooks.unique, [{ key: hook!.id, path: '/hook', contentType: 'application/json' }])
  t.same(JSON.parse(http.hooks.unique[0]!.body as string), event, 'the webhook gets the event as JSON by default')
  await waitFor(() => mqttSink.unique.length === 1, 'the MQTT message', 5000, 20)
  t.match(mqttSink.unique[0], { key: pub!.id, topic: 'alerts/anomaly', payload: '{"score":0.97}' })
  t.same(board.writes, [[4, 1], [4, 0]], 'the relay pulsed')
})

t.test('a 5xx is retried; a 4xx goes to the dead letters; a missing actuator too', async t => {
  http.failNext = { count: 2, status: 503 }
  await outbox.enqueue({ ...base, type: 'sms', action: { type: 'sms', to: '+15550000001', body: 'retry me' } })
  await waitFor(() => http.sms.unique.some(m => m.body === 'retry me'), 'delivered after two 503s', 5000, 20)
  http.failNext = { count: 1, status: 422 }
  const refused = (await outbox.enqueue({ ...base, type: 'http.post', action: { type: 'http.post', url: `${http.url}/hook`, headers: {}, body: 'plain text' } }))!
  const ghost = (await outbox.enqueue({ ...base, type: 'gpio.write', action: { type: 'gpio.write', actuator: 'nope', value: 1 } }))!
  await waitFor(async () => (await outbox.dead()).length === 2, 'two dead letters', 5000, 20)
  const dead = new Map((await outbox.dead()).map(d => [d.id, d]))
  t.match(dead.get(refused.id), { attempts: 1, lastError: /422/ })
  t.match(dead.get(ghost.id), { attempts: 1, lastError: /no actuator nope/ })
})

t.test('a receiver that was down gets each message once when it is back', async t => {
  await mail.stop()
  const before = mail.unique.length
  const jobs = await Promise.all([1, 2, 3].map(async n => (await outbox.enqueue({ ...base, type: 'email', action: { type: 'email', to: 'ops@example.test', subject: `outage ${n}`, text: 'x' } }))!))
  await waitFor(() => outbox.pending().every(j => j.attempts >= 1 && j.lastError != null), 'failed attempts while the server is down', 5000, 20)
  t.match(outbox.pending()[0]?.lastError, /ECONNREFUSED/)
  await mail.resume()
  await waitFor(() => outbox.size === 0, 'delivered after the server came back', 10_000, 20)
  t.same(mail.unique.slice(before).map(m => m.key).sort(), jobs.map(j => `<${j.id}@gatemesh>`).sort())
})
