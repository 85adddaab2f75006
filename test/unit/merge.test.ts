import t from 'tap'
import fc from 'fast-check'
import { compareEntries, mergeEntry, type WireEntry } from '../../node/registry/entry.ts'

// The merge must be commutative, associative and idempotent for replicas to
// converge whatever order gossip and anti-entropy deliver entries in.
const entry: fc.Arbitrary<WireEntry> = fc.record({
  k: fc.constantFrom('node/a', 'health/a', 'deployment/x'),
  v: fc.option(fc.json(), { nil: null }),
  t: fc.tuple(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 3 })),
  w: fc.constantFrom('12D3KooWAAAAAAAAAA', '12D3KooWBBBBBBBBBB', '12D3KooWCCCCCCCCCC'),
  s: fc.stringMatching(/^[A-Za-z0-9_-]{12}$/)
})

type Replica = Map<string, WireEntry>

function mergeMaps (a: Replica, b: Replica): Replica {
  const out = new Map(a)
  for (const [k, e] of b) out.set(k, mergeEntry(out.get(k), e))
  return out
}

function replicaOf (entries: WireEntry[]): Replica {
  return entries.reduce((m, e) => mergeMaps(m, new Map([[e.k, e]])), new Map<string, WireEntry>())
}

const same = (a: Replica, b: Replica): boolean =>
  a.size === b.size && [...a].every(([k, e]) => b.get(k) != null && compareEntries(e, b.get(k)!) === 0 && b.get(k)!.v === e.v)

t.test('entry merge', async t => {
  fc.assert(fc.property(entry, entry, (a, b) => compareEntries(mergeEntry(a, b), mergeEntry(b, a)) === 0), { numRuns: 2000 })
  t.pass('commutative')
  fc.assert(fc.property(entry, entry, entry, (a, b, c) =>
    compareEntries(mergeEntry(mergeEntry(a, b), c), mergeEntry(a, mergeEntry(b, c))) === 0), { numRuns: 2000 })
  t.pass('associative')
  fc.assert(fc.property(entry, a => mergeEntry(a, a) === a))
  t.pass('idempotent')
  fc.assert(fc.property(entry, entry, (a, b) => {
    const c = compareEntries(a, b)
    return Math.sign(c) === -Math.sign(compareEntries(b, a)) && (c !== 0 || (a.s === b.s && a.w === b.w))
  }))
  t.pass('a total order: only identical writes compare equal')
})

t.test('replica merge converges regardless of delivery order', async t => {
  const replica = fc.array(entry, { maxLength: 12 }).map(replicaOf)
  fc.assert(fc.property(replica, replica, (a, b) => same(mergeMaps(a, b), mergeMaps(b, a))), { numRuns: 500 })
  t.pass('commutative')
  fc.assert(fc.property(replica, replica, replica, (a, b, c) => same(mergeMaps(mergeMaps(a, b), c), mergeMaps(a, mergeMaps(b, c)))), { numRuns: 500 })
  t.pass('associative')
  fc.assert(fc.property(replica, a => same(mergeMaps(a, a), a)))
  t.pass('idempotent')
  fc.assert(fc.property(fc.array(entry, { maxLength: 20 }), fc.nat(), (entries, seed) => {
    const shuffled = [...entries].sort((x, y) => ((x.s.charCodeAt(seed % 12) ^ seed) - (y.s.charCodeAt(seed % 12) ^ seed)))
    return same(replicaOf(entries), replicaOf(shuffled))
  }), { numRuns: 500 })
  t.pass('any delivery order of the same entries gives the same state')
})

t.test('tombstones win by timestamp like any write', async t => {
  const put: WireEntry = { k: 'x/y', v: '1', t: [5, 0], w: '12D3KooWAAAAAAAAAA', s: 'aaaaaaaaaaaa' }
  const del: WireEntry = { k: 'x/y', v: null, t: [6, 0], w: '12D3KooWBBBBBBBBBB', s: 'bbbbbbbbbbbb' }
  t.equal(mergeEntry(put, del).v, null)
  t.equal(mergeEntry(del, put).v, null)
  const later: WireEntry = { ...put, t: [7, 0] }
  t.equal(mergeEntry(del, later).v, '1', 'a later write resurrects the key')
})
