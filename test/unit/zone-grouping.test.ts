import t from 'tap'
import { ZoneGrouping } from '../../node/scheduler/zone-grouping.ts'
import type { Member } from '../../node/membership/membership.ts'

const member = (peerId: string, zone: string, state: Member['state'] = 'alive'): Member =>
  ({ peerId, self: false, role: 'gateway', labels: { zone }, addresses: [], state, lastSeenMs: 0, since: 0 })

t.test('the grouping is kept while the members are the same objects, and rebuilt when any is not', async t => {
  const g = new ZoneGrouping()
  const list = [member('a', 'z1'), member('b', 'z1'), member('c', 'z2')]
  const first = g.of(list)
  t.same([...first.keys()].sort(), ['z1', 'z2'])
  t.equal(first.get('z1')!.length, 2)
  t.equal(g.of([...list]), first, 'a copy of the same list: the same grouping')
  const changed = [list[0]!, member('b', 'z1', 'dead'), list[2]!]
  const second = g.of(changed)
  t.not(second, first, 'one new member object: grouped again')
  t.equal(second.get('z1')!.find(m => m.peerId === 'b')!.state, 'dead', 'with the new state')
  t.not(g.of([...changed, member('d', 'z3')]), second, 'a longer list: grouped again')
  t.not(new ZoneGrouping().of([]), g.of([]), 'an empty list is grouped each time (nothing to compare)')
})

t.test('the zones to read again: named by keys and members, everything at first and on request', async t => {
  const g = new ZoneGrouping()
  t.equal(g.take(), 'all', 'everything at first')
  t.same([...g.take() as Set<string>], [], 'then nothing until something changes')
  g.of([member('a', 'z1'), member('c', 'z2')])
  g.keyChanged('zone/z2/writer')
  g.keyChanged('endorse/z3/someone')
  g.memberChanged('a')
  t.same([...g.take() as Set<string>].sort(), ['z1', 'z2', 'z3'], 'the summary\'s zone, the endorsement\'s and the member\'s')
  t.same([...g.take() as Set<string>], [], 'taken once')
  g.memberChanged('stranger')
  t.equal(g.take(), 'all', 'a member not grouped yet: every zone')
  g.keyChanged('zone')
  t.equal(g.take(), 'all', 'a key without a zone: every zone')
  g.allChanged()
  t.equal(g.take(), 'all', 'the periodic recheck')
})
