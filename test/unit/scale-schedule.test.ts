import t from 'tap'
import fc from 'fast-check'
import { events, healthWrites, pushPullScale, rates, zoneCount, zoneMembers, zoneOfMember, zoneSchedulers, type HealthWrite, type ScheduledEvent } from '../bench/scale/schedule.ts'

const count = (list: Array<{ kind: string }>, kind: string): number => list.filter(e => e.kind === kind).length

/** Every health write the events deliver: the scheduler's own ('health' events) and those its renewals carry. */
const delivered = (list: ScheduledEvent[]): HealthWrite[] => list.flatMap(e =>
  e.kind === 'health' ? [{ at: e.at, member: e.member, seq: e.seq }] : e.kind === 'lease' ? e.health ?? [] : [])
const writeKey = (w: HealthWrite): string => `${w.at}:${w.member}:${w.seq}`

t.test('over a whole health round every member writes health once and probes the agent at the configured rates', async t => {
  for (const others of [19, 199, 999]) {
    const round = 60_000
    const list = events({ others }, 0, round)
    // a write in the round's last second goes with the renewal at its end
    const health = delivered(events({ others }, 0, round + 1))
    t.equal(health.length, others, `${others}: one periodic health write per member per 60 s`)
    t.same(new Set(health.map(e => e.member)).size, others, 'from every member')
    t.ok(list.filter(e => e.kind === 'health').every(e => e.member === 0), 'only the scheduler\'s own health is a delta of its own')
    t.equal(count(list, 'lease'), round / 1000, 'the scheduler renews every 1000 ms (main\'s renewIntervalMs)')
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
      const key = (e: ScheduledEvent): string => `${e.at}:${e.kind}:${e.member}:${e.seq}:${(e.health ?? []).map(writeKey).join(',')}`
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
  within(delivered(list).length, r.healthWritesPerSec * seconds, 'health writes')
  within(count(list, 'pushPull'), r.pushPullsInPerSec * seconds, 'push-pulls')
  within(count(list, 'sync'), r.syncsInPerSec * seconds, 'syncs')
  t.equal(pushPullScale(32), 1)
  t.equal(pushPullScale(33), 2)
  t.equal(pushPullScale(1000), 6)
  t.equal(pushPullScale(5000), 9)
})

t.test('a fleet of one agent alone gets nothing', async t => {
  t.same(events({ others: 0 }, 0, 10_000), [])
  t.same(rates({ others: 0 }), { healthWritesPerSec: 0, leaseWritesPerSec: 0, summaryWritesPerSec: 0, probesInPerSec: 0, pushPullsInPerSec: 0, syncsInPerSec: 0 })
})

t.test('zones: only the agent\'s zone mates send it health and leases; every zone\'s scheduler its summary', async t => {
  const init = { others: 999, zoneSize: 200 }
  t.equal(zoneCount(init), 5, 'N = 1000 in zones of 200')
  t.same(zoneMembers(init, 0), [0, 199], 'the agent and 199 mates')
  t.same(zoneMembers(init, 4), [799, 999])
  t.same(zoneSchedulers(init), [0, 199, 399, 599, 799])
  t.equal(zoneOfMember(init, 198), 0)
  t.equal(zoneOfMember(init, 199), 1)
  t.equal(zoneOfMember(init, 998), 4)
  const list = events(init, 0, 60_000)
  const health = delivered(events(init, 0, 60_001))
  t.equal(health.length, 199, 'one periodic health write per zone mate per 60 s')
  t.ok(health.every(e => e.member < 199), 'from zone mates only')
  const leases = list.filter(e => e.kind === 'lease')
  t.equal(leases.length, 60, 'only the agent\'s zone\'s scheduler renews its lease to it, every 1000 ms')
  t.ok(leases.every(e => e.member === 0), 'member 0, its zone\'s first')
  t.equal(count(list, 'summary'), 10, 'all five schedulers write their summary every 30 s')
  const probes = count(list, 'probe')
  t.ok(Math.abs(probes - 60) <= 3, `SWIM stays fleet-wide: about a probe a second (${probes} in 60 s)`)
  const r = rates(init)
  t.ok(Math.abs(r.healthWritesPerSec - 199 / 60) < 1e-9, 'health from the 199 zone mates')
  t.equal(r.leaseWritesPerSec, 1, 'lease renewals do not grow with the number of zones')
  t.equal(rates({ others: 999, zoneSize: 1 }).leaseWritesPerSec, 0, 'an agent alone in its zone is its scheduler: no renewal reaches it')
  const alone = events({ others: 999, zoneSize: 1 }, 0, 60_000)
  t.equal(count(alone, 'lease') + count(alone, 'health'), 0, 'nor health: it has no zone mates')
  t.ok(Math.abs(rates({ others: 999 }).healthWritesPerSec - 999 / 60) < 1e-9, 'one zone: everyone\'s health, as before')
})

t.test('zone mates\' health rides on their scheduler\'s renewals: each carries exactly the writes of its window', async t => {
  for (const init of [{ others: 19 }, { others: 199, extraHealthPerMin: 2 }, { others: 999, zoneSize: 200, extraHealthPerMin: 3 }, { others: 199, leaseRenewMs: 1700 }]) {
    const renew = init.leaseRenewMs ?? 1000
    const what = JSON.stringify(init)
    const seconds = 900
    const list = events(init, 0, seconds * 1000, 5)
    const leases = list.filter(e => e.kind === 'lease')
    t.equal(leases.length, Math.ceil(seconds * 1000 / renew), `${what}: a renewal every ${renew} ms, as before`)
    t.ok(leases.every(e => e.member === 0 && Array.isArray(e.health)), 'each from the zone\'s scheduler, with the health it relays')
    let exact = true
    for (const e of leases) {
      const window = healthWrites(init, Math.max(0, e.at - renew), e.at + 1, 5).filter(w => w.at > e.at - renew && w.at <= e.at && w.member !== 0)
      if (JSON.stringify(window) !== JSON.stringify(e.health)) exact = false
      if (e.health!.some((w, i) => i > 0 && w.at < e.health![i - 1]!.at)) exact = false
    }
    t.ok(exact, 'each renewal carries the mates\' writes in (previous renewal, it], ordered by time')
    // over the whole span: every write once, none lost (all of them in the last renewal's window or before)
    const end = leases[leases.length - 1]!.at
    const all = healthWrites(init, 0, end + 1, 5).filter(w => w.at <= end)
    const got = delivered(events(init, 0, end + 1, 5)).filter(w => w.at <= end).map(writeKey).sort()
    t.same(got, all.map(writeKey).sort(), 'every health write delivered exactly once')
    t.equal(new Set(got).size, got.length, 'none twice')
    const mates = zoneMembers(init, 0)[1]
    t.ok(all.every(w => w.member < mates), 'only zone mates\' health')
    const r = rates(init)
    t.ok(Math.abs(all.length - r.healthWritesPerSec * seconds) <= 4 * Math.sqrt(r.healthWritesPerSec * seconds) + mates, `health rate unchanged: ${all.length} near ${(r.healthWritesPerSec * seconds).toFixed(0)}`)
    // the same grouping when asked a second at a time, as the generator asks
    const stitched: ScheduledEvent[] = []
    for (let from = 0; from < 120_000; from += 1000) stitched.push(...events(init, from, from + 1000, 5))
    t.same(stitched, events(init, 0, 120_000, 5), 'a second at a time gives the same renewals and writes')
  }
})
