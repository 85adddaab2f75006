import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SimulatedSensor } from '../../sensors/simulated.ts'
import { sensorSuite } from './suite.ts'

const dir = await mkdtemp(join(tmpdir(), 'gatemesh-sim-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })

const defaults = { waveform: 'sine' as const, rateHz: 1, offset: 0, amplitude: 1, periodMs: 60_000, noise: 0, seed: 1 }

let n = 0
sensorSuite(t, {
  type: 'simulated',
  async make ({ id, min, max, sequence }) {
    // CSV replay is how the simulator plays an exact sequence
    const path = join(dir, `seq-${n++}.csv`)
    await writeFile(path, 'value\n' + sequence.join('\n') + '\n')
    const sensor = new SimulatedSensor({ ...defaults, id, unit: 'u', min, max, waveform: 'csv', rateHz: 100, csv: { path, column: 'value', header: true, loop: false } })
    return { sensor, play: async () => {} }
  }
})

t.test('simulated: waveforms', async t => {
  const sine = new SimulatedSensor({ ...defaults, id: 's', offset: 20, amplitude: 5, periodMs: 1000 })
  await sine.open()
  await sine.close()
  const base = Date.now()
  const values = Array.from({ length: 100 }, (_, i) => sine.next(base + i * 10) as number)
  t.ok(Math.max(...values) <= 25.0001 && Math.min(...values) >= 14.9999, 'sine stays within offset ± amplitude')
  t.ok(Math.max(...values) > 24 && Math.min(...values) < 16, 'and reaches both ends')

  const walk = new SimulatedSensor({ ...defaults, id: 'w', waveform: 'randomWalk', offset: 10, noise: 0.5, seed: 7 })
  const steps = Array.from({ length: 200 }, () => walk.next() as number)
  t.ok(steps.some(v => v !== 10) && steps.every((v, i) => i === 0 || Math.abs(v - steps[i - 1]!) < 5), 'random walk moves in small steps')
  const again = new SimulatedSensor({ ...defaults, id: 'w2', waveform: 'randomWalk', offset: 10, noise: 0.5, seed: 7 })
  t.same(Array.from({ length: 200 }, () => again.next()), steps, 'same seed, same signal')

  const noisy = new SimulatedSensor({ ...defaults, id: 'n', waveform: 'noise', offset: 3, noise: 1, seed: 3 })
  const xs = Array.from({ length: 2000 }, () => noisy.next() as number)
  const mean = xs.reduce((a, b) => a + b) / xs.length
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length)
  t.ok(Math.abs(mean - 3) < 0.1 && Math.abs(sd - 1) < 0.1, `noise has the declared mean and deviation (${mean.toFixed(2)}, ${sd.toFixed(2)})`)

  const spiky = new SimulatedSensor({ ...defaults, id: 'k', waveform: 'noise', offset: 0, noise: 0.01, spikes: { every: 10, magnitude: 50 }, seed: 2 })
  const ys = Array.from({ length: 50 }, () => spiky.next() as number)
  t.same(ys.map((v, i) => v > 25 ? i : -1).filter(i => i >= 0), [9, 19, 29, 39, 49], 'a spike every 10th reading')
})

t.test('simulated: emits at the declared rate', async t => {
  const s = new SimulatedSensor({ ...defaults, id: 'rate', rateHz: 200 })
  let count = 0
  s.addEventListener('reading', () => { count++ })
  await s.open()
  await new Promise(resolve => setTimeout(resolve, 500))
  await s.close()
  t.ok(count >= 70 && count <= 110, `about 100 readings in 0.5 s at 200 Hz (got ${count})`)
})

t.test('simulated: a wall clock stepped back does not silence it', async t => {
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  const s = new SimulatedSensor({ ...defaults, id: 'step', rateHz: 20 })
  const stamps: number[] = []
  s.addEventListener('reading', (e: Event) => { stamps.push((e as CustomEvent<{ ts: number }>).detail.ts) })
  await s.open()
  // as NTP or faketime would: five minutes back, once the sensor runs
  Date.now = () => realNow() - 300_000
  const started = performance.now()
  await new Promise(resolve => setTimeout(resolve, 1000))
  await s.close()
  const elapsed = performance.now() - started
  // each reading is stamped with the wall clock as it reads: the ones after the step are five minutes back
  const after = stamps.filter(ts => ts < realNow() - 200_000).length
  t.ok(after >= 5, `readings go on after the step (${after} in ${Math.round(elapsed)} ms at 20 Hz)`)
})

t.test('simulated: a missing CSV is a typed error naming the field', async t => {
  const s = new SimulatedSensor({ ...defaults, id: 'c', waveform: 'csv', csv: { path: join(dir, 'nope.csv'), column: 0, header: false, loop: true } })
  await t.rejects(s.open(), { code: 'ERR_SENSOR_CONFIG', field: 'csv.path' })
})
