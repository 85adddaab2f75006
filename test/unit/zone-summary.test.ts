import t from 'tap'
import { changedMeaningfully, parseZoneSummary, summarisedLeader, summarize, zoneSummaries, type ZoneSummary } from '../../node/scheduler/zone-summary.ts'
import type { Member } from '../../node/membership/membership.ts'
import type { RegistryEntry } from '../../node/registry/entry.ts'

const member = (peerId: string, zone: string | undefined, state: Member['state'], cpuPct?: number, role = 'gateway'): Member => ({
  peerId,
  self: false,
  labels: zone == null ? {} : { zone },
  addresses: [],
  state,
  role,
  lastSeenMs: 0,
  since: 0,
  incarnation: 1,
  clockOffsetMs: null,
  clockSkewed: false,
  ...(cpuPct == null ? {} : { health: { cpuPct, processCpuPct: 1, rssBytes: 1, memFreeBytes: 1000, memTotalBytes: 4000, load: [0, 0, 0], uptimeSec: 1, seq: 1, ts: 1 } })
} as Member)

const entry = <T>(key: string, value: T, ts = 1000): RegistryEntry<T> => ({ key, value, deleted: false, ts: [ts, 0], writer: key.split('/').at(-1)! })

const registryOf = (entries: Array<RegistryEntry<unknown>>): { list<T>(prefix: string): Array<RegistryEntry<T>> } => ({
  list: <T>(prefix: string) => entries.filter(e => e.key.startsWith(prefix)) as Array<RegistryEntry<T>>
})

t.test('a zone sums up its members, their instances and health; other zones and coordinators stay out', async t => {
  const members = [
    member('A1', 'a', 'alive', 10), member('A2', 'a', 'suspect', 30), member('A3', 'a', 'dead', 90),
    member('B1', 'b', 'alive', 50), member('C', 'a', 'alive', 70, 'coordinator')
  ]
  const registry = registryOf([
    entry('instance/A1/m', { state: 'running' }), entry('instance/A2/m', { state: 'running' }), entry('instance/A2/n', { state: 'failed' }),
    entry('instance/B1/m', { state: 'running' }), entry('instance/A1/x', { state: 'NOT A STATE' }), entry('instance/A1/y', 'garbage')
  ])
  const s = summarize('a', members, registry, { peerId: 'A1', term: 3 }, 5000)
  t.same(s, {
    zone: 'a',
    scheduler: 'A1',
    term: 3,
    at: 5000,
    members: { alive: 1, suspect: 1, dead: 1 },
    instances: { running: 2, failed: 1 },
    reporting: 2,
    cpuPct: 20,
    memoryPct: 75
  })
  t.ok(parseZoneSummary(s) != null, 'what it writes is what readers accept')
  t.equal(parseZoneSummary({ ...s, extra: 1 }), undefined, 'a summary with more fields is refused')
  t.equal(parseZoneSummary({ ...s, cpuPct: 1e9 }), undefined, 'and one out of bounds')
})

t.test('a summary is written again only when something meaningful changed', async t => {
  const base: ZoneSummary = { zone: 'a', scheduler: 'A1', term: 1, at: 0, members: { alive: 2, suspect: 0, dead: 0 }, instances: { running: 1 }, reporting: 2, cpuPct: 20, memoryPct: 50 }
  const m = { cpuChangePct: 10, memoryChangePct: 5 }
  t.ok(changedMeaningfully(undefined, base, m), 'the first one')
  t.notOk(changedMeaningfully(base, { ...base, at: 9, cpuPct: 29, memoryPct: 54 }, m), 'averages that moved a little')
  t.ok(changedMeaningfully(base, { ...base, cpuPct: 30 }, m), 'CPU moved 10 points')
  t.ok(changedMeaningfully(base, { ...base, memoryPct: null }, m), 'nobody reports any more')
  t.ok(changedMeaningfully(base, { ...base, members: { alive: 1, suspect: 1, dead: 0 } }, m), 'a member turned suspect')
  t.ok(changedMeaningfully(base, { ...base, instances: { running: 1, starting: 1 } }, m), 'an instance started')
  t.ok(changedMeaningfully(base, { ...base, term: 2 }, m), 'a new term')
})

t.test('readers take the summary of the scheduler they follow in that zone, else the newest', async t => {
  const s = (zone: string, scheduler: string, at: number): ZoneSummary => ({ zone, scheduler, term: 1, at, members: { alive: 1, suspect: 0, dead: 0 }, instances: {}, reporting: 0, cpuPct: null, memoryPct: null })
  const registry = registryOf([
    entry('zone/a/OLD', s('a', 'OLD', 900), 900), entry('zone/a/NEW', s('a', 'NEW', 800), 800),
    entry('zone/b/B1', s('b', 'B1', 500), 500), entry('zone/b/B2', s('b', 'B2', 700), 700),
    entry('zone/c/C1', s('other', 'C1', 700), 700), entry('zone/d/D1', { garbage: true }, 700)
  ])
  const seen = zoneSummaries(registry, { leaderOf: zone => zone === 'a' ? { peerId: 'NEW', term: 1 } : undefined }, 1000)
  t.same(seen.map(z => [z.zone, z.scheduler, z.current, z.ageMs]), [['a', 'NEW', true, 200], ['b', 'B2', false, 300]], 'the followed scheduler\'s; else the newest; malformed and mislabelled ones left out')
})

t.test('outside a zone, its scheduler is the one its summaries name: written by that scheduler, eligible in the zone, first by precedence', async t => {
  const s = (zone: string, scheduler: string, term: number): ZoneSummary => ({ zone, scheduler, term, at: 1, members: { alive: 1, suspect: 0, dead: 0 }, instances: {}, reporting: 0, cpuPct: null, memoryPct: null })
  const eligible = new Set(['B1', 'B2', 'B3'])
  t.same(summarisedLeader(registryOf([]), 'b', eligible, new Set()), undefined, 'no summary: no scheduler known')
  const handOver = registryOf([entry('zone/b/B1', s('b', 'B1', 3)), entry('zone/b/B2', s('b', 'B2', 4))])
  t.same(summarisedLeader(handOver, 'b', eligible, new Set()), { peerId: 'B2', term: 4 }, 'the successor\'s higher term, while the old one\'s summary lingers')
  const tie = registryOf([entry('zone/b/B3', s('b', 'B3', 4)), entry('zone/b/B2', s('b', 'B2', 4))])
  t.same(summarisedLeader(tie, 'b', eligible, new Set()), { peerId: 'B2', term: 4 }, 'equal terms: the lower peer id, the one precedence rule')
  const forged = registryOf([
    entry('zone/b/B1', s('b', 'B1', 3)),
    entry('zone/b/B2', s('b', 'B3', 9)), // names another node
    entry('zone/b/X', s('b', 'X', 9)), // not an eligible member of zone b
    entry('zone/b/B3', s('c', 'B3', 9)), // a summary of another zone under b
    entry('zone/b/B4', { term: 9 }) // malformed
  ])
  t.same(summarisedLeader(forged, 'b', eligible, new Set()), { peerId: 'B1', term: 3 }, 'summaries naming another writer, of a non-member, of another zone or malformed are left out')
})
