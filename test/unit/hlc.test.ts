import t from 'tap'
import fc from 'fast-check'
import { compareTimestamps, HybridLogicalClock, type Timestamp } from '../../node/registry/hlc.ts'
import { MAX_COUNTER } from '../../protocols/registry/wire.ts'

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
  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 40_000 }), fc.integer({ min: 0, max: MAX_COUNTER })), { maxLength: 50 }), remotes => {
    const clock = new HybridLogicalClock({ now: () => 10_000, maxDriftMs: 60_000 })
    for (const r of remotes) {
      clock.observe(r as Timestamp)
      const ts = clock.tick()
      if (compareTimestamps(ts, r as Timestamp) <= 0 || ts[1] > MAX_COUNTER) return false
    }
    return true
  }))
  t.pass('property holds')
})

t.test('no sequence of peers\' stamps moves the clock past the adoption bound or the schema', async t => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 2 ** 48 }), fc.integer({ min: 0, max: 2 ** 32 })), { maxLength: 80 }), fc.integer({ min: 1, max: 200 }), (remotes, ticks) => {
    const now = 1_700_000_000_000
    const clock = new HybridLogicalClock({ now: () => now, maxDriftMs: 60_000 })
    for (const r of remotes) {
      try {
        clock.observe(r as Timestamp)
      } catch {}
      for (let i = 0; i < ticks; i++) {
        const ts = clock.tick()
        if (ts[0] > now + 30_000 + ticks || ts[1] > MAX_COUNTER) return false
      }
    }
    return true
  }))
  t.pass('property holds')
})

t.test('a poisoned stamp is refused, never adopted', async t => {
  const now = 1_000_000
  const clock = new HybridLogicalClock({ now: () => now, maxDriftMs: 60_000 })
  t.throws(() => { clock.observe([now + 50_000, 2 ** 31]) }, { code: 'ERR_INVALID_TIMESTAMP' }, 'a counter past the schema')
  t.throws(() => { clock.observe([now + 61_000, 0]) }, { code: 'ERR_CLOCK_DRIFT' }, 'beyond the drift limit')
  t.same(clock.peek(), [0, 0], 'the clock did not move')
  t.equal(clock.observe([now + 50_000, MAX_COUNTER]), false, 'within the drift limit but past the adoption bound: kept out of the clock')
  t.same(clock.tick(), [now, 0], 'the next tick is still on the physical clock')
  t.equal(clock.observe([now + 20_000, MAX_COUNTER]), true, 'within the adoption bound: adopted')
  t.same(clock.tick(), [now + 20_001, 0], 'the counter carries into the wall clock instead of passing the schema')
})

t.test('a timestamp beyond the allowed drift is refused', async t => {
  const clock = new HybridLogicalClock({ now: () => 1000, maxDriftMs: 500 })
  t.throws(() => { clock.observe([1501, 0]) }, { code: 'ERR_CLOCK_DRIFT' })
  t.same(clock.peek(), [0, 0], 'the clock is not moved by a refused timestamp')
  clock.observe([1250, 3])
  t.same(clock.tick(), [1250, 4])
  clock.observeOwn([1500, 7])
  t.same(clock.tick(), [1500, 8], 'its own stamps are adopted up to the drift limit')
})

t.test('a clock resumed from disk continues past the stored maximum', async t => {
  const clock = new HybridLogicalClock({ now: () => 10, start: [5000, 7] })
  t.same(clock.tick(), [5000, 8])
  t.throws(() => new HybridLogicalClock({ start: [5000, 2 ** 31 + 5] }), { code: 'ERR_INVALID_TIMESTAMP' })
})

t.test('a stamp after a shared key\'s current entry', async t => {
  const clock = new HybridLogicalClock({ now: () => 1000, maxDriftMs: 60_000 })
  t.same(clock.tickAfter([500, 3]), [1000, 0], 'the physical clock is already past it')
  t.same(clock.tickAfter([1000, 9]), [1000, 10], 'or just past it')
  t.same(clock.tickAfter([40_000, MAX_COUNTER]), [40_001, 0], 'carrying into the wall clock')
  t.same(clock.tick(), [1000, 12], 'a floor past the adoption bound does not drag the clock along')
  t.throws(() => clock.tickAfter([100_000, 0]), { code: 'ERR_CLOCK_DRIFT' })
})
