import t from 'tap'
import { preprocess, resample, SensorWindow } from '../../node/runtime/window.ts'

const r = (sensorId: string, ts: number, value: number): { sensorId: string, ts: number, value: number } => ({ sensorId, ts, value })

t.test('count window with stride and preprocessing', async t => {
  const w = new SensorWindow({ sensors: ['a'], window: { size: 3, stride: 2 }, preprocess: [{ op: 'scale', min: 0, max: 10 }] })
  const out = [1, 2, 3, 4, 5, 6].map((v, i) => w.push(r('a', i, v)))
  t.same(out, [undefined, undefined, [0.1, 0.2, 0.3], undefined, [0.3, 0.4, 0.5], undefined], 'full at the third reading, then every second one')
  t.same(w.stats('a'), { min: 4, max: 6, mean: 5, size: 3 })
  t.equal(w.push(r('other', 9, 1)), undefined, 'readings of other sensors are ignored')
})

t.test('time window resampled to a fixed size', async t => {
  const w = new SensorWindow({ sensors: ['a'], window: { size: 5, ms: 100, stride: 1 }, preprocess: [] })
  t.equal(w.push(r('a', 0, 0)), undefined)
  t.equal(w.push(r('a', 50, 5)), undefined, 'not a whole window yet')
  t.same(w.push(r('a', 100, 10)), [0, 2.5, 5, 7.5, 10], 'linear between readings')
  t.same(w.push(r('a', 130, 10)), [3, 5.5, 8, 10, 10], 'the window slides')
  t.same(resample([r('a', 0, 1)], 0, 10, 3), [1, 1, 1])
})

t.test('several sensors: one step per reading of the first, [a, b] each', async t => {
  const w = new SensorWindow({ sensors: ['a', 'b'], window: { size: 2, stride: 1 }, preprocess: [] })
  t.equal(w.push(r('a', 0, 1)), undefined)
  t.equal(w.push(r('b', 0, 10)), undefined)
  t.equal(w.push(r('b', 1, 20)), undefined, 'the second sensor does not trigger')
  t.same(w.push(r('a', 1, 2)), [[1, 10], [2, 20]])
})

t.test('preprocessing steps', async t => {
  t.equal(preprocess(5, [{ op: 'standardize', mean: 3, std: 2 }]), 1)
  t.equal(preprocess(50, [{ op: 'clip', min: 0, max: 40 }, { op: 'scale', min: 0, max: 40 }]), 1)
})

t.test('time window: a wall clock stepped back starts it afresh instead of silencing it', async t => {
  const w = new SensorWindow({ sensors: ['a'], window: { size: 3, ms: 100, stride: 1 }, preprocess: [] })
  const ahead = 1_000_000
  let out: unknown
  for (let ts = ahead; ts <= ahead + 200; ts += 10) out = w.push(r('a', ts, 1))
  t.ok(Array.isArray(out), 'full while the clock is ahead')
  // five minutes back: the held readings are stamped later than every new one for five minutes
  const back = ahead + 200 - 300_000
  const after: unknown[] = []
  for (let ts = back; ts <= back + 200; ts += 10) after.push(w.push(r('a', ts, 2)))
  t.equal(after[0], undefined, 'the new time base needs a window of readings first')
  t.same(after.at(-1), [2, 2, 2], 'then it emits again, from the readings after the step only')
  t.ok(w.stats('a')!.size <= 12, `and holds a window's worth, not everything since the step (${w.stats('a')!.size})`)
})
