import t from 'tap'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { sleep } from '../helpers/cluster.ts'
import { testReplica } from '../helpers/replica.ts'
import type { Replica } from '../../node/registry/replica.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

const W = '12D3KooWAAAAAAAAAA'

/** A store that records each call: how many disk writes the replica asked for, and with what. */
class CountingStore extends MemoryRegistryStore {
  readonly calls: Array<['put', string[]] | ['delete', string[]]> = []
  override async put (entries: WireEntry[]): Promise<void> {
    this.calls.push(['put', entries.map(e => e.k)])
    await super.put(entries)
  }

  override async delete (keys: string[]): Promise<void> {
    this.calls.push(['delete', [...keys]])
    await super.delete(keys)
  }
}

function setup (persistDelayMs: number): { r: Replica, store: CountingStore } {
  const store = new CountingStore()
  const r = testReplica({ store, persistDelayMs })
  return { r, store }
}

const entry = (k: string, t0: number, v: string | null = '1'): WireEntry => ({ k, v, t: [t0, 0], w: W, s: 'sig' })

t.test('entries from peers share one disk write after the delay, the newest per key', async t => {
  const { r, store } = setup(200)
  r.install([entry(`health/${W}`, 1)], 'gossip')
  r.install([entry('deployment/a', 1)], 'sync')
  r.install([entry(`health/${W}`, 2, '2')], 'gossip')
  t.same(store.calls, [], 'nothing written before the delay')
  await sleep(350)
  t.same(store.calls, [['put', [`health/${W}`, 'deployment/a']]], 'one write, each key once')
  t.same((store.entries.get(`health/${W}`) as WireEntry).t, [2, 0], 'the newest entry of the key')
})

t.test("this node's own write goes at once, and takes what waits along", async t => {
  const { r, store } = setup(60_000)
  r.install([entry('deployment/a', 1)], 'gossip')
  r.install([entry(`node/${W}`, 1)], 'local')
  await r.flushed()
  t.same(store.calls, [['put', ['deployment/a', `node/${W}`]]])
})

t.test('a drop is written at once; flushed() writes what waits', async t => {
  const { r, store } = setup(60_000)
  r.install([entry('deployment/a', 1)], 'gossip')
  r.install([entry('deployment/b', 1)], 'gossip')
  t.equal(r.dropWriter(W), 2, 'the revoked writer loses both')
  await r.flushed()
  t.same(store.calls, [['delete', ['deployment/a', 'deployment/b']]], 'a put then a delete of a key is one delete')
  t.equal(store.entries.size, 0)
  r.install([entry('deployment/c', 1)], 'gossip')
  await r.flushed()
  t.same(store.calls.at(-1), ['put', ['deployment/c']], 'stop() (flushed) does not wait for the delay')
})
