import { SensorNotOpenError } from '../../sensors/errors.ts'
import type { AbstractSensor, Reading } from '../../sensors/sensor.ts'
import type { Test } from 'tap'

/** How the shared suite drives one kind of driver. */
export interface DriverHarness {
  type: string
  /** GPIO only knows 0 and 1: no garbage to send */
  binary?: boolean
  /**
   * Build (not open) a sensor with this id and range that, once `play()` is
   * called after `open()`, receives `sequence` from its device in order.
   */
  make(options: { id: string, min: number, max: number, sequence: string[] }): Promise<{ sensor: AbstractSensor, play: () => Promise<void> }>
  teardown?(): Promise<void>
}

async function collect (sensor: AbstractSensor, n: number, timeoutMs = 10_000): Promise<Reading[]> {
  const out: Reading[] = []
  const signal = AbortSignal.timeout(timeoutMs)
  for await (const r of sensor.readings({ signal })) {
    out.push(r)
    if (out.length >= n) break
  }
  return out
}

/** One suite, every driver (as MQTT.js runs one store suite against every store). */
export function sensorSuite (t: Test, harness: DriverHarness): void {
  const sequence = harness.binary === true ? ['1', '0', '1'] : ['1.5', 'abc', '2.5', '1e9', 'NaN', '3.5']
  const expected = harness.binary === true ? [1, 0, 1] : [1.5, 2.5, 3.5]
  const garbage = sequence.length - expected.length

  t.test(`${harness.type}: lifecycle and description`, async t => {
    const { sensor } = await harness.make({ id: `${harness.type}-life`, min: -100, max: 1000, sequence })
    t.equal(sensor.status, 'closed')
    t.equal(sensor.type, harness.type)
    t.same(sensor.info(), { id: `${harness.type}-life`, type: harness.type, unit: 'u' }, 'info is id, type, unit')
    await t.rejects(sensor.read(), { code: 'ERR_SENSOR_NOT_OPEN' }, 'read before open is refused')
    const statuses: string[] = []
    sensor.addEventListener('status', evt => statuses.push(evt.detail.status))
    await sensor.open()
    t.equal(sensor.status, 'open')
    await sensor.open()
    await sensor.close()
    await sensor.close()
    t.same(statuses, ['opening', 'open', 'closing', 'closed'], 'opening → open → closing → closed, idempotent')
    await t.rejects(sensor.read(), SensorNotOpenError)
  })

  t.test(`${harness.type}: readings arrive in order; garbage is counted and skipped`, async t => {
    const { sensor, play } = await harness.make({ id: `${harness.type}-data`, min: -100, max: 1000, sequence })
    const rejected: string[] = []
    sensor.addEventListener('rejected', evt => rejected.push(evt.detail.reason))
    const got = collect(sensor, expected.length)
    const before = Date.now()
    await sensor.open()
    await play()
    const readings = await got
    t.same(readings.map(r => r.value), expected, 'values in device order')
    t.ok(readings.every(r => r.sensorId === sensor.id && r.ts >= before && r.ts <= Date.now()), 'each reading has sensorId and ts')
    t.equal(sensor.stats().readings, expected.length)
    t.equal(sensor.stats().rejected, garbage, `${garbage} bad values counted`)
    t.equal(rejected.length, garbage)
    if (garbage > 0) t.same(new Set(rejected), new Set(['parse', 'range', 'nan']), 'reasons name the problem')
    const latest = await sensor.read()
    t.equal(latest.value, expected.at(-1), 'read() gives the latest level')
    t.equal(sensor.status, 'open', 'still open after garbage')
    await sensor.close()
  })

  t.test(`${harness.type}: no readings after close`, async t => {
    const { sensor, play } = await harness.make({ id: `${harness.type}-closed`, min: -100, max: 1000, sequence })
    await sensor.open()
    await sensor.close()
    let n = 0
    sensor.addEventListener('reading', () => { n++ })
    await play().catch(() => {})
    await new Promise(resolve => setTimeout(resolve, 200))
    t.equal(n, 0, 'a closed driver emits nothing')
  })

  t.teardown(async () => { await harness.teardown?.() })
}
