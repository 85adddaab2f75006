import t from 'tap'
import fc from 'fast-check'
import { DEFAULT_OWNERSHIP_RULES } from '../../node/registry/acl.ts'
import { compareEntries, mergeEntry } from '../../node/registry/entry.ts'
import { Retention } from '../../node/registry/retention.ts'
import { testReplica } from '../helpers/replica.ts'
import type { Replica } from '../../node/registry/replica.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

// The replica's merge, with tombstones and departed nodes' entries collected
// by the retention, must still be commutative, associative and idempotent,
// and collection must never bring a deleted value back: whatever order
// writes, exchanges, collections and the passing of time come in, every
// replica ends with the same state, the one last-writer-wins gives over
// everything ever written minus what has expired.

const RETENTION = 30
const W = ['12D3KooWAAAAAAAAAA', '12D3KooWBBBBBBBBBB', '12D3KooWCCCCCCCCCC']

const entry: fc.Arbitrary<WireEntry> = fc.record({
  // node-owned keys (they expire) and a fleet key (it never does)
  k: fc.constantFrom(`health/${W[0]}`, `instance/${W[0]}/a`, `instance/${W[1]}/a`, `node/${W[2]}`, 'deployment/x'),
  v: fc.option(fc.constantFrom('1', '2', '"x"', '{"a":1}'), { nil: null }),
  t: fc.tuple(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 3 })),
  w: fc.constantFrom(...W),
  s: fc.stringMatching(/^[A-Za-z0-9_-]{12}$/)
})

const clock = { now: 0 }
const retention = new Retention({ retentionMs: RETENTION, rules: DEFAULT_OWNERSHIP_RULES, now: () => clock.now })

const replica = (): Replica => testReplica({ expired: e => retention.expired(e) })

function state (r: Replica): string {
  return JSON.stringify([...r.values()].sort((a, b) => a.k < b.k ? -1 : 1))
}

/** A replica holding `entries` as delivered in order, collected after the deliveries `collectAfter` marks. */
function holding (entries: WireEntry[], collectAfter: boolean[] = []): Replica {
  const r = replica()
  entries.forEach((e, i) => {
    r.install([e], 'sync')
    if (collectAfter[i] === true) r.collect()
  })
  r.collect()
  return r
}

/** Anti-entropy from `a` into a copy of `b`, then a sweep. */
function merged (a: Replica, b: Replica): Replica {
  const r = holding([...b.values()])
  r.install([...a.values()], 'sync')
  r.collect()
  return r
}

/** Last-writer-wins over everything ever written, less what has expired by now. */
function ideal (written: WireEntry[]): string {
  const best = new Map<string, WireEntry>()
  for (const e of written) best.set(e.k, mergeEntry(best.get(e.k), e))
  return JSON.stringify([...best.values()].filter(e => !retention.expired(e)).sort((a, b) => a.k < b.k ? -1 : 1))
}

t.test('with collection, the merge is commutative, associative and idempotent', async t => {
  const entries = fc.array(entry, { maxLength: 10 })
  const at = fc.integer({ min: 0, max: 140 })
  fc.assert(fc.property(entries, entries, fc.array(fc.boolean(), { maxLength: 20 }), at, (a, b, marks, now) => {
    clock.now = now
    return state(holding([...a, ...b], marks)) === state(holding([...b, ...a], [...marks].reverse()))
  }), { numRuns: 1000 })
  t.pass('commutative: the order of deliveries and of collections between them does not matter')
  fc.assert(fc.property(entries, entries, entries, at, (a, b, c, now) => {
    clock.now = now
    const [ra, rb, rc] = [holding(a), holding(b), holding(c)]
    return state(merged(merged(ra, rb), rc)) === state(merged(ra, merged(rb, rc)))
  }), { numRuns: 1000 })
  t.pass('associative')
  fc.assert(fc.property(entries, at, (a, now) => {
    clock.now = now
    const r = holding(a)
    return state(merged(r, r)) === state(r) && state(merged(r, holding(a))) === state(r)
  }), { numRuns: 500 })
  t.pass('idempotent')
})

type Op =
  | { op: 'write', at: number, entries: WireEntry[] }
  | { op: 'sync', from: number, to: number }
  | { op: 'collect', at: number }
  | { op: 'wait', ms: number }

// few keys, so that schedules often delete, collect and meet an old copy of the same key
const write: fc.Arbitrary<WireEntry> = entry.chain(e => fc.constantFrom(`instance/${W[0]}/a`, 'deployment/x').map(k => ({ ...e, k })))

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('write' as const), at: fc.nat(2), entries: fc.array(write, { minLength: 1, maxLength: 2 }) }),
  fc.record({ op: fc.constant('sync' as const), from: fc.nat(2), to: fc.nat(2) }),
  fc.record({ op: fc.constant('collect' as const), at: fc.nat(2) }),
  fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 1, max: 40 }) })
)

t.test('collection never resurrects: any schedule converges to last-writer-wins less what expired', async t => {
  fc.assert(fc.property(fc.array(op, { minLength: 10, maxLength: 40, size: 'max' }), ops => {
    clock.now = 0
    const replicas = [replica(), replica(), replica()]
    const written: WireEntry[] = []
    // the newest entry each replica ever held per key: what it holds may be collected, never go back
    const newest = replicas.map(() => new Map<string, WireEntry>())
    const monotone = (): boolean => replicas.every((r, i) => [...r.values()].every(e => {
      const before = newest[i]!.get(e.k)
      if (before != null && compareEntries(e, before) < 0) return false
      newest[i]!.set(e.k, e)
      return true
    }))
    for (const o of ops) {
      if (o.op === 'write') {
        // a writer stamps with its clock: entries are written now, give or take the arbitrary's spread
        const stamped = o.entries.map(e => ({ ...e, t: [clock.now + e.t[0] % 10, e.t[1]] as [number, number] }))
        written.push(...stamped)
        replicas[o.at]!.install(stamped, 'local')
      } else if (o.op === 'sync') {
        replicas[o.to]!.install([...replicas[o.from]!.values()], 'sync')
      } else if (o.op === 'collect') {
        replicas[o.at]!.collect()
      } else {
        clock.now += o.ms
      }
      if (!monotone()) return false
    }
    // heal: everyone exchanges with everyone, then sweeps
    for (const a of replicas) for (const b of replicas) b.install([...a.values()], 'sync')
    for (const r of replicas) r.collect()
    const want = ideal(written)
    return replicas.every(r => state(r) === want)
  }), { numRuns: 3000 })
  t.pass('every replica holds exactly the live winners, nothing collected came back')
})

t.test('an old replica that missed a delete cannot bring the value back once the tombstone is collected', async t => {
  clock.now = 0
  const key = `instance/${W[0]}/a`
  const put: WireEntry = { k: key, v: '1', t: [1, 0], w: W[0]!, s: 'aaaaaaaaaaaa' }
  const del: WireEntry = { k: key, v: null, t: [5, 0], w: W[0]!, s: 'bbbbbbbbbbbb' }
  const current = holding([put, del])
  const old = holding([put])
  clock.now = 5 + RETENTION + 1
  t.equal(current.collect(), 1, 'the tombstone is collected')
  t.equal(current.get(key), undefined)
  current.install([...old.values()], 'sync')
  t.equal(current.get(key), undefined, 'the old value is refused: it is older than the collected tombstone')
  t.equal(old.collect(), 1, 'and the old replica collects it itself')
  const deployment: WireEntry = { k: 'deployment/x', v: null, t: [1, 0], w: W[0]!, s: 'cccccccccccc' }
  current.install([deployment], 'sync')
  t.equal(current.collect(), 0, 'a fleet-authorised tombstone is kept')
  t.ok(compareEntries(current.get('deployment/x')!, deployment) === 0)
})
