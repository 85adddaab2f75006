import t from 'tap'
import { ZoneView } from '../../node/scheduler/zone-view.ts'
import type { ZoneMember } from '../../node/scheduler/leader.ts'

// peer ids only need to look like base58 here; rank is by role, then id
const A = '12D3KooWAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
const B = '12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB'
const C = '12D3KooWCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC'
const D = '12D3KooWDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD'
const E = '12D3KooWEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE'
const SELF = C
const HOLD = 3000

const claim = (term: number) => ({ kind: 'claim' as const, claim: { term, leaseMs: 3000, since: 0 } })
const endorse = (follows: string, term: number) => ({ kind: 'endorsement' as const, endorsement: { follows, term } })
const members = (dead: string[] = []): ZoneMember[] => [A, B, C, D, E].map(peerId => ({ peerId, state: dead.includes(peerId) ? 'dead' : 'alive', eligible: true, role: 'gateway' }))

/** B holds term 1, followed by C (this node) and D; A (ranked first) claimed term 2 on the other side of a partition, followed by E. */
function healed (now: number): ZoneView {
  const view = new ZoneView('default')
  view.fold(B, claim(1), false, true, now)
  view.fold(C, endorse(B, 1), false, true, now)
  view.fold(D, endorse(B, 1), false, true, now)
  return view
}

/** Both claims renewed at `now` (their leases stay live), then the view chooses with `dead` members dead. */
function renewAndChoose (view: ZoneView, now: number, dead: string[] = []): boolean {
  view.fold(A, claim(2), false, true, now)
  view.fold(B, claim(1), false, true, now)
  return view.choose(members(dead), SELF, undefined, now, 10_000, HOLD)
}

t.test('a live scheduler tied by endorsements keeps the zone for tieHoldMs, then the precedence rule settles it', async t => {
  let now = 1_000_000
  const view = healed(now)
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current?.peerId, B, 'B, followed by two, leads')
  // the other side's claim arrives with its endorser, while a stale "dead" verdict on D makes it a tie
  view.fold(A, claim(2), false, true, now)
  view.fold(E, endorse(A, 2), false, true, now)
  view.choose(members([D]), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current?.peerId, B, 'tied one to one: B stays')
  now += HOLD - 100
  renewAndChoose(view, now, [D])
  t.equal(view.current?.peerId, B, 'still tied, not yet for tieHoldMs: B stays')
  now += 200
  t.ok(renewAndChoose(view, now, [D]), 'the tie held for tieHoldMs: the choice changes')
  t.same({ peerId: view.current?.peerId, term: view.current?.term }, { peerId: A, term: 2 }, 'the higher term wins the tie')
})

t.test('the tie ends when the verdict is refuted: the scheduler most members follow keeps the zone', async t => {
  let now = 1_000_000
  const view = healed(now)
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  view.fold(A, claim(2), false, true, now)
  view.fold(E, endorse(A, 2), false, true, now)
  view.choose(members([D]), SELF, undefined, now, 10_000, HOLD)
  now += 500
  renewAndChoose(view, now)
  t.equal(view.current?.peerId, B, 'D refuted: two to one for B')
  now += HOLD
  renewAndChoose(view, now)
  t.equal(view.current?.peerId, B, 'and B keeps it after the hold too')
})

t.test('a claim endorsed more widely takes over at once', async t => {
  const now = 1_000_000
  const view = healed(now)
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  view.fold(A, claim(2), false, true, now)
  view.fold(E, endorse(A, 2), false, true, now)
  view.fold(C, endorse(A, 2), false, true, now)
  view.fold(D, endorse(A, 2), false, true, now)
  t.ok(view.choose(members(), SELF, undefined, now, 10_000, HOLD), 'changed')
  t.equal(view.current?.peerId, A, 'three to none: A at once')
})

t.test('without a hold, a tie goes to the precedence rule at once (the old behaviour)', async t => {
  const now = 1_000_000
  const view = healed(now)
  view.choose(members(), SELF, undefined, now, 10_000, 0)
  view.fold(A, claim(2), false, true, now)
  view.fold(E, endorse(A, 2), false, true, now)
  view.choose(members([D]), SELF, undefined, now, 10_000, 0)
  t.equal(view.current?.peerId, A)
})

t.test('a late renewal: the lease holds while membership holds the scheduler alive, up to two leases', async t => {
  const suspect = (id: string): ZoneMember[] => members().map(m => m.peerId === id ? { ...m, state: 'suspect' } : m)
  let now = 1_000_000
  const view = healed(now)
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current?.peerId, B, 'B leads')
  now += 4000
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current?.peerId, B, 'no renewal for 4 s (a lease is 3 s), but B is alive: B still leads')
  view.choose(suspect(B), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current, undefined, 'B suspected past its lease: the zone is vacant')
  view.fold(B, claim(1), false, true, now)
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current?.peerId, B, 'renewed: B leads again')
  now += 6100
  view.choose(members(), SELF, undefined, now, 10_000, HOLD)
  t.equal(view.current, undefined, 'alive, but nothing for more than two leases: vacant')
})
