import t from 'tap'
import { MemberListing, type MemberFacts, type MemberSource } from '../../node/membership/listing.ts'
import type { NodeClaims } from '../../node/identity/certificate.ts'
import type { HealthRecord } from '../../node/membership/health.ts'

const claims = (zone: string): NodeClaims => ({ labels: { zone }, role: 'gateway' } as unknown as NodeClaims)

function fixture (): { listing: MemberListing, live: { seen: number | null, offset: number | null, addrs: string[], health?: HealthRecord } } {
  const live: { seen: number | null, offset: number | null, addrs: string[], health?: HealthRecord } = { seen: null, offset: null, addrs: [] }
  const source: MemberSource = {
    lastSeenMs: () => live.seen,
    clockOffsetMs: () => live.offset,
    addresses: () => live.addrs,
    health: () => live.health
  }
  return { listing: new MemberListing('me', source), live }
}

t.test('a member is the same object while its facts hold, and a new one when any changes', async t => {
  const { listing } = fixture()
  const z1 = claims('z1')
  const facts: MemberFacts = { state: 'alive', since: 10, incarnation: 1, clockSkewed: false, claims: z1 }
  const first = listing.member('a', facts)
  t.equal(listing.member('a', { ...facts }), first, 'equal facts in a new object: the same member')
  t.match(first, { peerId: 'a', self: false, role: 'gateway', labels: { zone: 'z1' }, state: 'alive', since: 10, incarnation: 1, clockSkewed: false })
  const changes: Array<[string, Partial<MemberFacts>]> = [
    ['state', { state: 'suspect' }],
    ['since', { since: 11 }],
    ['incarnation', { incarnation: 2 }],
    ['clock verdict', { clockSkewed: true }],
    ['certificate', { claims: claims('z1') }]
  ]
  for (const [what, change] of changes) {
    const changed = listing.member('a', { ...facts, ...change })
    t.not(changed, first, `a new ${what}: a new object`)
    t.not(listing.member('a', facts), changed, `and back: a new object again (${what})`)
  }
  t.equal(listing.member('me', facts).self, true, 'this node\'s own member says so')
  t.equal(listing.member('b', { ...facts, claims: undefined }).role, undefined, 'no claims: no role')
})

t.test('last seen, clock offset, addresses and health are read when read, and seen by JSON and spreads', async t => {
  const { listing, live } = fixture()
  const m = listing.member('a', { state: 'alive', since: 0, incarnation: null, clockSkewed: false, claims: claims('z') })
  t.equal(m.lastSeenMs, null)
  t.equal(m.health, undefined)
  live.seen = 250
  live.offset = -12
  live.addrs = ['/ip4/127.0.0.1/tcp/1']
  live.health = { cpuPct: 5 } as HealthRecord
  t.equal(m.lastSeenMs, 250, 'last seen as it is now, on the same object')
  t.equal(m.clockOffsetMs, -12)
  t.same(m.addresses, ['/ip4/127.0.0.1/tcp/1'])
  t.same(m.health, { cpuPct: 5 })
  const json = JSON.parse(JSON.stringify(m))
  t.match(json, { lastSeenMs: 250, clockOffsetMs: -12, addresses: ['/ip4/127.0.0.1/tcp/1'], health: { cpuPct: 5 } }, 'JSON has every field')
  t.match({ ...m }, { lastSeenMs: 250, health: { cpuPct: 5 } }, 'so does a spread')
  m.health = undefined
  live.health = { cpuPct: 9 } as HealthRecord
  t.equal(m.health, undefined, 'an assigned value replaces the live one')
  t.equal(m.lastSeenMs, 250, 'and leaves the other fields live')
})

t.test('a round forgets the members it did not hand out', async t => {
  const { listing } = fixture()
  const facts: MemberFacts = { state: 'alive', since: 0, incarnation: 1, clockSkewed: false, claims: claims('z') }
  listing.beginRound()
  const a = listing.member('a', facts)
  const b = listing.member('b', facts)
  listing.endRound()
  listing.beginRound()
  t.equal(listing.member('a', facts), a, 'listed again: kept')
  listing.endRound()
  listing.beginRound()
  t.not(listing.member('b', facts), b, 'b missed a round: forgotten, so a new object')
  listing.endRound()
})
