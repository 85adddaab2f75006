import t from 'tap'
import fc from 'fast-check'
import { events, pushPullScale, rates } from '../bench/scale/schedule.ts'

const count = (list: Array<{ kind: string }>, kind: string): number => list.filter(e => e.kind === kind).length

t.test('over a whole health round every member writes health once and probes the agent at the configured rates', async t => {
  for (const others of [19, 199, 999]) {
    const round = 60_000
    const list = events({ others }, 0, round)
    t.equal(count(list, 'health'), others, `${others}: one periodic health write per member per 60 s`)
    t.same(new Set(list.filter(e => e.kind === 'health').map(e => e.member)).size, others, 'from every member')
    t.equal(count(list, 'lease'), round / 500, 'the scheduler renews every 500 ms')
    // the agent is probed by each member once per (N−1) s: one probe a second in all
    const probes = events({ others }, 0, others * 1000).filter(e => e.kind === 'probe')
    t.equal(probes.length, others, 'each member probes the agent once per round')
    t.equal(new Set(probes.map(e => e.member)).size, others, 'every member takes its turn')
  }
})

t.test('events are ordered, inside the window, and the same however the time is split', async t => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 1, max: 20_000 }), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: 9 }),
    (others, from, length, extra, cut) => {
      const init = { others, extraHealthPerMin: extra / 10 }
      const to = from + length
      const whole = events(init, from, to, 7)
      if (whole.some((e, i) => e.at < from || e.at >= to || (i > 0 && e.at < whole[i - 1]!.at) || e.member < 0 || e.member >= others)) return false
      // split on a whole second, as the generator asks for one second at a time
      const mid = Math.floor((from + (length * cut) / 10) / 1000) * 1000
      if (mid <= from || mid >= to) return true
      const split = [...events(init, from, mid, 7), ...events(init, mid, to, 7)]
      const key = (e: { at: number, kind: string, member: number, seq: number }): string => `${e.at}:${e.kind}:${e.member}:${e.seq}`
      return JSON.stringify(whole.map(key).sort()) === JSON.stringify(split.map(key).sort())
    }), { numRuns: 200 })
  t.pass('property holds')
})

t.test('changes on top of the periodic writes and the exchanges others start arrive at their expected rates', async t => {
  const others = 999
  const seconds = 600
  const list = events({ others, extraHealthPerMin: 3 }, 0, seconds * 1000, 3)
  const r = rates({ others, extraHealthPerMin: 3 })
  t.equal(r.healthWritesPerSec, others * (1 / 60 + 3 / 60))
  const within = (actual: number, expected: number, what: string): void => {
    t.ok(Math.abs(actual - expected) <= 4 * Math.sqrt(expected) + 1, `${what}: ${actual} near ${expected.toFixed(1)}`)
  }
  within(count(list, 'health'), r.healthWritesPerSec * seconds, 'health writes')
  within(count(list, 'pushPull'), r.pushPullsInPerSec * seconds, 'push-pulls')
  within(count(list, 'sync'), r.syncsInPerSec * seconds, 'syncs')
  t.equal(pushPullScale(32), 1)
  t.equal(pushPullScale(33), 2)
  t.equal(pushPullScale(1000), 6)
  t.equal(pushPullScale(5000), 9)
})

t.test('a fleet of one agent alone gets nothing', async t => {
  t.same(events({ others: 0 }, 0, 10_000), [])
  t.same(rates({ others: 0 }), { healthWritesPerSec: 0, leaseWritesPerSec: 0, probesInPerSec: 0, pushPullsInPerSec: 0, syncsInPerSec: 0 })
})
