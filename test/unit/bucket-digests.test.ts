import t from 'tap'
import { BucketDigests } from '../../node/registry/bucket-digests.ts'
import { testReplica } from '../helpers/replica.ts'
import type { Replica } from '../../node/registry/replica.ts'
import { digestBuckets } from '../../protocols/registry-sync/index.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

const A = '12D3KooWAAAAAAAAAA'
const B = '12D3KooWBBBBBBBBBB'
const expiredKeys = new Set<string>()

const replica = (): Replica => testReplica({ expired: e => expiredKeys.has(e.k), persistDelayMs: 60_000 })

const entry = (k: string, t0: number, w = A): WireEntry => ({ k, v: '1', t: [t0, 0], w, s: `sig-${k}-${t0}` })

t.test('kept digests are always what digestBuckets gives over the covered entries', async t => {
  const r = replica()
  const digests = new BucketDigests(r)
  const excluded = new Set<string>()
  const covers = (e: WireEntry): boolean => !excluded.has(e.k)
  const expected = (): string[] => digestBuckets([...r.values()].filter(covers))
  const keys = [
    ...Array.from({ length: 300 }, (_, i) => `deployment/d${i}`),
    ...Array.from({ length: 100 }, (_, i) => `instance/${A}/m${i}`),
    ...Array.from({ length: 50 }, (_, i) => `health/${i % 2 === 0 ? A : B}x${i}`)
  ]
  r.install(keys.map(k => entry(k, 1)), 'sync')
  t.same(digests.digests('zone:a', covers), expected(), 'the first round')
  t.same(digests.digests('zone:a', covers), expected(), 'a round with nothing changed')

  r.install([entry('deployment/d7', 2), entry('deployment/new', 1), entry(`health/${A}x0`, 2)], 'gossip')
  t.same(digests.digests('zone:a', covers), expected(), 'after a replaced entry, a new one and a volatile one')

  excluded.add('deployment/d9')
  excluded.add(`instance/${A}/m3`)
  t.same(digests.digests('zone:a', covers), expected(), 'after the covered set changed without any change to the replica')
  excluded.clear()
  t.same(digests.digests('zone:a', covers), expected(), 'and changed back')

  expiredKeys.add('deployment/d11')
  expiredKeys.add(`instance/${A}/m5`)
  t.equal(r.collect(), 2, 'the sweep collects two entries')
  t.same(digests.digests('zone:a', covers), expected(), 'after entries were dropped')

  const none = (e: WireEntry): boolean => covers(e) && !e.k.startsWith('instance/')
  t.same(digests.digests('none', none), digestBuckets([...r.values()].filter(none)), 'another scope has digests of its own')
  t.same(digests.digests('zone:a', covers), expected(), 'and leaves the first scope\'s alone')
  t.not(digests.digests('none', none).join(), digests.digests('zone:a', covers).join(), 'the two scopes differ, as their entries do')
})
