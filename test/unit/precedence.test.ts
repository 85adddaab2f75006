import t from 'tap'
import fc from 'fast-check'
import { chooseLeader, type ClaimState, type ZoneMember } from '../../node/scheduler/leader.ts'
import { winningPlacement, type PlacementRecord } from '../../node/scheduler/placements.ts'
import { comparePrecedence, firstInPrecedence } from '../../node/scheduler/precedence.ts'

// a handful of peer ids whose string order differs from their generation order
const PEERS = [
  '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
  '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK',
  '12D3KooWAJjbRkp8FPF5MKgMU53aUTxWkqvDrs4zc1VMbwRwfsbE',
  '12D3KooWSa5iSpNMaJhXZtkEEmFUKYBH4e3yMgYqbk4vPvBqhhjx',
  '12D3KooWK6R8AAamykHjrFYwDSGoFKD6mHfx5uAM7S1L8fGFtbP3'
]

/** Just enough registry for winningPlacement(): fixed values by key. */
const registryOf = (values: Record<string, unknown>) => ({ value: <T>(key: string) => values[key] as T | undefined })
const placement = (term: number, node: string): PlacementRecord => ({ term, nodes: [node], replicas: 1, bundle: 'b', deploymentTs: [1, 0], at: 0 })

t.test('comparePrecedence is a strict total order: higher term first, then lower peer id', async t => {
  const holder = fc.record({ term: fc.integer({ min: 0, max: 5 }), peerId: fc.constantFrom(...PEERS) })
  fc.assert(fc.property(holder, holder, holder, (a, b, c) => {
    const ab = Math.sign(comparePrecedence(a, b))
    if (ab !== -Math.sign(comparePrecedence(b, a))) return false
    if ((ab === 0) !== (a.term === b.term && a.peerId === b.peerId)) return false
    // transitivity
    if (comparePrecedence(a, b) < 0 && comparePrecedence(b, c) < 0 && !(comparePrecedence(a, c) < 0)) return false
    return true
  }), { numRuns: 2000 })
  t.ok(comparePrecedence({ term: 2, peerId: PEERS[1]! }, { term: 1, peerId: PEERS[2]! }) < 0, 'the higher term wins')
  t.ok(comparePrecedence({ term: 3, peerId: PEERS[2]! }, { term: 3, peerId: PEERS[1]! }) < 0, 'equal terms: the lower peer id wins')
})

t.test('the election and the placement choice agree for any claims, terms and endorsements', async t => {
  const members: ZoneMember[] = PEERS.map(peerId => ({ peerId, state: 'alive', eligible: true, role: 'gateway' }))
  const claims = fc.uniqueArray(fc.record({ peerId: fc.constantFrom(...PEERS), term: fc.integer({ min: 1, max: 6 }) }), { selector: c => c.peerId, minLength: 1, maxLength: PEERS.length })
  const follows = fc.array(fc.tuple(fc.constantFrom(...PEERS), fc.constantFrom(...PEERS)), { maxLength: 5 })
  let checked = 0
  fc.assert(fc.property(claims, follows, (list, pairs) => {
    // a claimant's own key holds its claim, so it endorses no one
    const endorsements = new Map(pairs.filter(([by]) => !list.some(c => c.peerId === by)))
    const live: ClaimState[] = list.map(c => ({ ...c, live: true }))
    // a long vacancy: every claimant is entitled whatever its rank
    const { leader } = chooseLeader({ claims: live, endorsements, members, floor: 0, vacantForMs: 1e9, staggerMs: 1 })
    if (leader == null) return false
    // the tie-break: most endorsed first, then the precedence rule
    const count = (id: string): number => [...endorsements].filter(([by, f]) => f === id && by !== id).length
    const most = Math.max(...list.map(c => count(c.peerId)))
    const expected = firstInPrecedence(list.filter(c => count(c.peerId) === most))!
    if (leader.peerId !== expected.peerId || leader.term !== expected.term) return false
    // every claimant wrote a placement with its term: agents follow the leader's
    const values = Object.fromEntries(list.map(c => [`placement/d1/${c.peerId}`, placement(c.term, c.peerId)]))
    const won = winningPlacement(registryOf(values), 'd1', { leaderOf: () => leader, followed: () => list })
    checked++
    return won?.scheduler === leader.peerId && won.term === leader.term
  }), { numRuns: 1000 })
  t.equal(checked, 1000, 'every generated case was checked')
})

t.test('until the leader places a deployment, the schedulers followed before stand in, by precedence', async t => {
  const history = fc.uniqueArray(fc.record({ peerId: fc.constantFrom(...PEERS), term: fc.integer({ min: 1, max: 6 }) }), { selector: c => c.peerId, minLength: 1, maxLength: PEERS.length })
  fc.assert(fc.property(history, fc.subarray(PEERS), fc.integer({ min: 1, max: 6 }), (followed, writers, skew) => {
    const leader = { peerId: 'leader-without-a-placement', term: 7 }
    const values: Record<string, unknown> = {}
    for (const f of followed) {
      // some wrote with the term they led in, some with another (forged or stale): only the first kind counts
      if (writers.includes(f.peerId)) values[`placement/d1/${f.peerId}`] = placement(f.term, f.peerId)
      else values[`placement/d1/${f.peerId}`] = placement(f.term + skew, f.peerId)
    }
    const won = winningPlacement(registryOf(values), 'd1', { leaderOf: () => leader, followed: () => followed })
    const expected = firstInPrecedence(followed.filter(f => writers.includes(f.peerId)))
    return won?.scheduler === expected?.peerId && won?.term === expected?.term
  }), { numRuns: 1000 })
  t.pass('a placement counts only with the term its writer led in')
})
