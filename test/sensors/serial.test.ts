import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SerialSensor, type SerialSensorInit } from '../../sensors/serial.ts'
import { waitFor } from '../helpers/cluster.ts'
import { PtyPair } from '../helpers/socat.ts'
import { sensorSuite } from './suite.ts'

// a real pseudo-terminal pair from socat stands in for the device
const dir = await mkdtemp(join(tmpdir(), 'gatemesh-serial-'))
const pairs: PtyPair[] = []
let n = 0
async function pty (): Promise<PtyPair> {
  const sub = join(dir, String(n++))
  await mkdir(sub)
  const pair = new PtyPair(sub)
  await pair.plug()
  pairs.push(pair)
  return pair
}
t.teardown(async () => {
  for (const p of pairs) await p.unplug()
  await rm(dir, { recursive: true, force: true })
})

const base = { baudRate: 115200, reconnectMs: 100, parser: { format: 'line' as const, delimiter: '\n' } }

function sensor (pair: PtyPair, init: Partial<SerialSensorInit> & { id: string }): SerialSensor {
  return new SerialSensor({ ...base, path: pair.devicePath, ...init })
}

sensorSuite(t, {
  type: 'serial',
  async make ({ id, min, max, sequence }) {
    const pair = await pty()
    return { sensor: sensor(pair, { id, unit: 'u', min, max }), play: async () => { await pair.write(sequence.join('\n') + '\n') } }
  }
})

t.test('serial: JSON lines with a path', async t => {
  const pair = await pty()
  const s = sensor(pair, { id: 'json', parser: { format: 'jsonl', jsonPath: 'data.temps[1]', delimiter: '\n' } })
  const values: number[] = []
  const reasons: string[] = []
  s.addEventListener('reading', e => values.push(e.detail.value))
  s.addEventListener('rejected', e => reasons.push(e.detail.reason))
  await s.open()
  await pair.write('{"data":{"temps":[1,21.5]}}\n{not json\n{"data":{}}\r\n{"data":{"temps":[0,"22.25"]}}\n')
  await waitFor(() => values.length === 2 && reasons.length === 2, 'two readings and two rejections', 5000, 20)
  t.same(values, [21.5, 22.25])
  t.same(reasons, ['parse', 'parse'], 'bad JSON and a missing path are parse errors')
  await s.close()
})

t.test('serial: regex parser', async t => {
  const pair = await pty()
  const s = sensor(pair, { id: 'rx', parser: { format: 'regex', pattern: 'T=(?<value>-?[0-9.]+)C', delimiter: '\n' } })
  const values: number[] = []
  s.addEventListener('reading', e => values.push(e.detail.value))
  await s.open()
  await pair.write('boot ok\nT=19.5C RH=40\nT=-2C\n')
  await waitFor(() => values.length === 2, 'two readings', 5000, 20)
  t.same(values, [19.5, -2])
  t.equal(s.stats().rejected, 1, 'the banner line is counted as garbage')
  await s.close()
})

t.test('serial: configuration errors name the field', async t => {
  t.throws(() => new SerialSensor({ ...base, id: 'x', path: '/dev/null', parser: { format: 'regex', pattern: '(', delimiter: '\n' } }), { code: 'ERR_SENSOR_CONFIG', field: 'parser.pattern' })
  t.throws(() => new SerialSensor({ ...base, id: 'x', path: '/dev/null', parser: { format: 'jsonl', delimiter: '\n' } }), { code: 'ERR_SENSOR_CONFIG', field: 'parser.jsonPath' })
  const missing = new SerialSensor({ ...base, id: 'gone', path: join(dir, 'no-such-tty') })
  await t.rejects(missing.open(), /No such file|ENOENT|cannot open/i, 'a missing device fails the first open')
  t.equal(missing.status, 'closed')
})

t.test('serial: the device vanishes and comes back', async t => {
  const pair = await pty()
  const s = sensor(pair, { id: 'flaky' })
  const values: number[] = []
  s.addEventListener('reading', e => values.push(e.detail.value))
  await s.open()
  await pair.write('1\n2\n')
  await waitFor(() => values.length === 2, 'readings before the unplug', 5000, 20)
  await pair.unplug()
  await waitFor(() => !s.connected, 'the driver to notice', 5000, 20)
  t.equal(s.status, 'open', 'the sensor stays open while the device is away')
  await new Promise(resolve => setTimeout(resolve, 300))
  await pair.plug()
  await waitFor(() => s.connected, 'the driver to reconnect', 10_000, 20)
  t.equal(s.reconnects, 1, 'one reconnect')
  await pair.write('3\n')
  await waitFor(() => values.length === 3, 'a reading after the device returned', 5000, 20)
  t.same(values, [1, 2, 3])
  await s.close()
})
