import t from 'tap'
import { TypedEventEmitter } from '@libp2p/interface'
import { pino } from 'pino'
import { Election } from '../../node/scheduler/election.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import { waitFor } from '../helpers/cluster.ts'
import type { Member, MemberState, MembershipEvents } from '../../node/membership/membership.ts'

/** A membership view this test controls: who each observer thinks is alive. */
class FakeMembership extends TypedEventEmitter<MembershipEvents> {
  readonly states = new Map<string, MemberState>()
  readonly all: MemoryMember[]
  readonly roles: Map<string, 'server' | 'gateway'>
  constructor (all: MemoryMember[], roles: Map<string, 'server' | 'gateway'>) {
    super()
    this.all = all
    this.roles = roles
  }

  members (): Member[] {
    return this.all.map(m => {
      const id = m.peerId.toString()
      return { peerId: id, self: false, role: this.roles.get(id), labels: {}, addresses: [], state: this.stateOf(id), lastSeenMs: 0, since: 0 }
    })
  }

  stateOf (id: string): MemberState { return this.states.get(id) ?? 'alive' }
  set (id: string, state: MemberState): void { this.states.set(id, state) }
}

const mesh = new MemoryMesh()
const members = [await mesh.add(), await mesh.add(), await mesh.add()]
await mesh.introduce()
const ids = members.map(m => m.peerId.toString())
const roles = new Map<string, 'server' | 'gateway'>(ids.map(id => [id, 'gateway']))
// the best rank: the one server, then peer ids in order
const sorted = [...ids].sort()
roles.set(sorted[2]!, 'server')
const expected = [sorted[2]!, sorted[0]!, sorted[1]!]
const views = members.map(() => new FakeMembership(members, roles))
const elections = members.map((m, i) => new Election({ peerId: m.peerId, registry: m.registry, membership: views[i]!, logger: pino({ level: process.env.LOG ?? 'silent' }) }, { settleMs: 0, checkIntervalMs: 20 }))
for (const m of members) await m.registry.start()
for (const e of elections) await e.start()
t.teardown(async () => {
  for (const e of elections) await e.stop()
  for (const m of members) await m.registry.stop()
})

const agree = async (on: number[], leader: string, what: string): Promise<number> => {
  await waitFor(() => on.every(i => elections[i]!.leader()?.peerId === leader), what, 5000, 20)
  const terms = new Set(on.map(i => elections[i]!.leader()!.term))
  t.equal(terms.size, 1, `${what}: one term`)
  return [...terms][0]!
}

t.test('the best-ranked live node is elected, and everyone agrees', async t => {
  const term = await agree([0, 1, 2], expected[0]!, 'all agree on the server')
  t.equal(term, 1)
  t.equal(elections.filter(e => e.isLeader()).length, 1, 'exactly one thinks it leads')
})

t.test('losing the scheduler elects a successor with a higher term', async t => {
  const idx = (id: string): number => ids.indexOf(id)
  const old = expected[0]!
  const survivors = [0, 1, 2].filter(i => i !== idx(old))
  for (const i of survivors) views[i]!.set(old, 'dead')
  mesh.gossip = true
  const term = await agree(survivors, expected[1]!, 'survivors agree on the next-ranked node')
  t.equal(term, 2, 'the term grew')
})

t.test('after a partition heals the higher term wins and the other steps down', async t => {
  // everyone alive again: the old leader came back; it must not take over without a higher term
  for (const v of views) for (const id of ids) v.set(id, 'alive')
  const term = await agree([0, 1, 2], expected[1]!, 'the returning node accepts the current scheduler')
  t.equal(term, 2)

  // split: {expected[2]} alone, the other two together
  const lone = ids.indexOf(expected[2]!)
  const pair = [0, 1, 2].filter(i => i !== lone)
  mesh.gossip = false
  views[lone]!.set(expected[0]!, 'dead')
  views[lone]!.set(expected[1]!, 'dead')
  for (const i of pair) views[i]!.set(expected[2]!, 'dead')
  await waitFor(() => elections[lone]!.isLeader(), 'the lone node elects itself', 5000, 20)
  t.equal(elections[lone]!.leader()!.term, 3, 'with a term above everything it has seen')
  t.equal(elections[pair[0]!]!.leader()?.peerId, expected[1], 'the pair keeps its scheduler')

  // heal: gossip flows again and anti-entropy exchanges the claims
  mesh.gossip = true
  for (const v of views) for (const id of ids) v.set(id, 'alive')
  for (const m of members) for (const o of members) if (m !== o) await m.registry.syncWith(o.peerId)
  const healed = await agree([0, 1, 2], expected[2]!, 'everyone follows the highest term')
  t.equal(healed, 3)
  await waitFor(() => members[0]!.registry.list('scheduler/').length === 1, 'the loser deleted its claim', 5000, 20)
  t.equal(elections.filter(e => e.isLeader()).length, 1, 'one scheduler')
})

t.test('a suspect scheduler keeps the zone: only its death frees it', async t => {
  // SWIM suspicion is an accusation the holder may refute (after a partition
  // heals, the other side's old news makes it suspect for a moment)
  const leader = expected[2]!
  const others = [0, 1, 2].filter(i => ids[i] !== leader)
  for (const i of others) views[i]!.set(leader, 'suspect')
  for (const i of others) elections[i]!.check()
  await new Promise(resolve => setTimeout(resolve, 300))
  for (const i of others) t.equal(elections[i]!.leader()?.peerId, leader, `node ${i} still follows the suspect scheduler`)
  t.equal(members[0]!.registry.list('scheduler/').length, 1, 'nobody claimed a new term')
  t.equal(elections[others[0]!]!.highestTerm(), 3, 'the term did not move')
  for (const i of others) views[i]!.set(leader, 'alive')
})
