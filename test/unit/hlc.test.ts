import t from 'tap'
import fc from 'fast-check'
import { compareTimestamps, HybridLogicalClock, type Timestamp } from '../../node/registry/hlc.ts'

t.test('ticks strictly increase even when the physical clock stalls or goes back', async t => {
  fc.assert(fc.property(fc.array(fc.integer({ min: -5000, max: 5000 }), { minLength: 1, maxLength: 200 }), steps => {
    let physical = 1_700_000_000_000
    const clock = new HybridLogicalClock({ now: () => physical })
    let last: Timestamp = [0, 0]
    for (const step of steps) {
      physical += step
      const ts = clock.tick()
      if (compareTimestamps(ts, last) <= 0) return false
      last = ts
    }
    return true
  }))
  t.pass('property holds')
})

t.test('ticks stay close to the physical clock', async t => {
  let physical = 1000
  const clock = new HybridLogicalClock({ now: () => physical })
  t.same(clock.tick(), [1000, 0])
  t.same(clock.tick(), [1000, 1])
  physical = 2000
  t.same(clock.tick(), [2000, 0], 'logical counter resets when the wall clock moves on')
})

t.test('observed remote timestamps push later ticks past them', async t => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 50_000 }), fc.integer({ min: 0, max: 100 })), { maxLength: 50 }), remotes => {
    const clock = new HybridLogicalClock({ now: () => 10_000, maxDriftMs: 60_000 })
    for (const r of remotes) {
      clock.observe(r as Timestamp)
      if (compareTimestamps(clock.tick(), r as Timestamp) <= 0) return false
    }
    return true
  }))
  t.pass('property holds')
})

t.test('a timestamp beyond the allowed drift is refused', async t => {
  const clock = new HybridLogicalClock({ now: () => 1000, maxDriftMs: 500 })
  t.throws(() => { clock.observe([1501, 0]) }, { code: 'ERR_CLOCK_DRIFT' })
  t.same(clock.peek(), [0, 0], 'the clock is not moved by a refused timestamp')
  clock.observe([1500, 3])
  t.same(clock.tick(), [1500, 4])
})

t.test('a clock resumed from disk continues past the stored maximum', async t => {
  const clock = new HybridLogicalClock({ now: () => 10, start: [5000, 7] })
  t.same(clock.tick(), [5000, 8])
})
