import t from 'tap'
import { parseConfig } from '../../node/config/config.ts'

const base = { role: 'gateway' }

t.test('sensors and actuators get defaults', async t => {
  const c = parseConfig({ ...base, sensors: [{ id: 't1', type: 'simulated', unit: '°C' }, { id: 's1', type: 'serial', path: '/dev/ttyUSB0' }], actuators: [{ id: 'relay', type: 'gpio', pin: 5 }] })
  t.match(c.sensors[0], { id: 't1', type: 'simulated', waveform: 'sine', rateHz: 1 })
  t.match(c.sensors[1], { baudRate: 9600, parser: { format: 'line', delimiter: '\n' }, reconnectMs: 1000 })
  t.match(c.actuators[0], { initial: 0, activeLow: false })
  t.match(c.runtime, { workers: 1, maxBatchSize: 8, backend: 'auto' })
  t.match(c.outbox, { maxAttempts: 10 })
  t.same(parseConfig(base).sensors, [], 'no sensors by default')
})

t.test('a bad sensor declaration names the field', async t => {
  const cases: Array<[unknown, string]> = [
    [[{ id: 's', type: 'serial', path: '/dev/x', baudRate: 'fast' }], 'config.sensors[0].baudRate'],
    [[{ id: 'ok', type: 'simulated' }, { id: 'g', type: 'gpio' }], 'config.sensors[1].pin'],
    [[{ id: 'm', type: 'mqtt', url: 'mqtt://h', topic: 't', colour: 'red' }], 'config.sensors[0].colour'],
    [[{ id: 'x', type: 'thermometer' }], 'config.sensors[0].type'],
    [[{ id: 'a', type: 'simulated' }, { id: 'a', type: 'simulated' }], 'config.sensors[1].id'],
    [[{ id: 'bad id!', type: 'simulated' }], 'config.sensors[0].id']
  ]
  for (const [sensors, field] of cases) {
    t.throws(() => parseConfig({ ...base, sensors }), { code: 'ERR_CONFIG', field }, field)
  }
  t.throws(() => parseConfig({ ...base, actuators: [{ id: 'r', type: 'gpio', pin: -1 }] }), { code: 'ERR_CONFIG', field: 'config.actuators[0].pin' })
  t.throws(() => parseConfig({ ...base, notifications: { sms: { url: 'ftp://x', accountSid: 'a', authToken: 'b', from: '1' } } }), { code: 'ERR_CONFIG', field: 'config.notifications.sms.url' })
})
