import t from 'tap'
import fc from 'fast-check'
import { TypedEventEmitter } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { pino } from 'pino'
import { Election } from '../../node/scheduler/election.ts'
import { winningPlacement, type PlacementRecord } from '../../node/scheduler/placements.ts'
import { comparePrecedence } from '../../node/scheduler/precedence.ts'
import type { RegistryEntry } from '../../node/registry/entry.ts'
import type { Member, MembershipEvents } from '../../node/membership/membership.ts'

/** Just enough registry for Election.check() and winningPlacement(): a fixed list of entries. */
function staticRegistry (entries: Array<RegistryEntry<unknown>>) {
  return {
    list: <T>(prefix: string) => entries.filter(e => e.key.startsWith(prefix)) as Array<RegistryEntry<T>>,
    set: async () => { throw new Error('not in this test') },
    delete: async () => { throw new Error('not in this test') },
    onChange: () => () => {}
  }
}

class AllAlive extends TypedEventEmitter<MembershipEvents> {
  readonly ids: string[]
  constructor (ids: string[]) { super(); this.ids = ids }
  members (): Member[] { return this.ids.map(peerId => ({ peerId, self: false, role: 'gateway', labels: {}, addresses: [], state: 'alive', lastSeenMs: 0, since: 0 })) }
  stateOf (): 'alive' { return 'alive' }
}

const entry = (key: string, value: unknown): RegistryEntry<unknown> => ({ key, value, deleted: false, ts: [1, 0], writer: key.split('/')[2]! })

// a handful of peer ids whose string order differs from their generation order
const PEERS = [
  '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN',
  '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK',
  '12D3KooWAJjbRkp8FPF5MKgMU53aUTxWkqvDrs4zc1VMbwRwfsbE',
  '12D3KooWSa5iSpNMaJhXZtkEEmFUKYBH4e3yMgYqbk4vPvBqhhjx',
  '12D3KooWK6R8AAamykHjrFYwDSGoFKD6mHfx5uAM7S1L8fGFtbP3'
]
const self = peerIdFromString(PEERS[0]!)

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

t.test('the elected scheduler is the one whose placement agents follow, for any set of claims', async t => {
  const claims = fc.uniqueArray(fc.record({ peerId: fc.constantFrom(...PEERS), term: fc.integer({ min: 1, max: 4 }) }), { selector: c => c.peerId, minLength: 1, maxLength: PEERS.length })
  let checked = 0
  await fc.assert(fc.asyncProperty(claims, async list => {
    const entries = [
      ...list.map(c => entry(`scheduler/default/${c.peerId}`, { term: c.term, since: 0 })),
      ...list.map(c => entry(`placement/d1/${c.peerId}`, { term: c.term, nodes: [c.peerId], replicas: 1, bundle: 'b', deploymentTs: [1, 0], at: 0 } satisfies PlacementRecord))
    ]
    const registry = staticRegistry(entries)
    const election = new Election({ peerId: self, registry, membership: new AllAlive(PEERS), logger: pino({ level: 'silent' }) }, { eligible: false })
    election.check()
    const leader = election.leader()
    const placement = winningPlacement(registry, 'd1')
    checked++
    return leader != null && placement != null && leader.peerId === placement.scheduler && leader.term === placement.term
  }), { numRuns: 500 })
  t.equal(checked, 500, 'every generated case was checked')
})
