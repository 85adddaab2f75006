import t, { type Test } from 'tap'
import { peerIdFromString } from '@libp2p/peer-id'
import { pino } from 'pino'
import { Scheduler } from '../../node/scheduler/scheduler.ts'
import { winningPlacement, type PlacementAuthority, type PlacementRecord } from '../../node/scheduler/placements.ts'
import type { Leader } from '../../node/scheduler/leader.ts'
import type { RegistryEntry } from '../../node/registry/entry.ts'
import type { ChangeListener } from '../../node/registry/watch.ts'
import type { Member } from '../../node/membership/membership.ts'

// The write/retire loop seen after a healed partition (issue 13): a node that
// still leads by its own view at term 1 receives the other side's placement
// at term 2 before its membership revives that scheduler. Its own placement
// lost, was retired, the retirement kicked another pass, which wrote it again:
// hundreds of writes a second, until the node starved and was marked dead.
// A placement counts only from the scheduler of its term as this node's
// election sees it (issue 14), so the other side's placement counts for
// nothing here until the election moves; then this node retires its own.

const SELF = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'
const OTHER = '12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK'
const BUNDLE = 'b'.repeat(64)

/** An in-memory registry with change callbacks, as the scheduler uses it. */
class Registry {
  readonly entries = new Map<string, RegistryEntry<unknown>>()
  readonly #watchers: Array<[string, ChangeListener]> = []
  writes: string[] = []
  #clock = 1

  put (key: string, value: unknown, writer = key.split('/')[2] ?? SELF): RegistryEntry<unknown> {
    const entry = { key, value, deleted: value === undefined, ts: [this.#clock++, 0] as [number, number], writer }
    this.entries.set(key, entry)
    // as the registry does: watchers hear of a change after the write returns
    for (const [prefix, fn] of this.#watchers) if (key.startsWith(prefix)) setImmediate(() => { fn({ key, entry, via: 'local' }) })
    return entry
  }

  async set (key: string, value: unknown): Promise<RegistryEntry<unknown>> { this.writes.push(key); return this.put(key, value, SELF) }
  async delete (key: string): Promise<RegistryEntry<unknown>> { return this.put(key, undefined, SELF) }
  value<T> (key: string): T | undefined {
    return this.get<T>(key)?.value
  }

  get<T> (key: string): RegistryEntry<T> | undefined {
    const e = this.entries.get(key)
    return e == null || e.deleted ? undefined : e as RegistryEntry<T>
  }

  list<T> (prefix: string): Array<RegistryEntry<T>> {
    return [...this.entries.values()].filter(e => e.key.startsWith(prefix) && !e.deleted) as Array<RegistryEntry<T>>
  }

  onChange (prefix: string, fn: ChangeListener): () => void {
    const w: [string, ChangeListener] = [prefix, fn]
    this.#watchers.push(w)
    return () => { this.#watchers.splice(this.#watchers.indexOf(w), 1) }
  }
}

const member = (peerId: string): Member => ({ peerId, self: peerId === SELF, role: 'gateway', labels: {}, addresses: [], state: 'alive', lastSeenMs: 0, since: 0 })

/** What this node's election says: it leads at term 1 until a test moves the role. */
interface ElectionView { leader: Leader, followed: Leader[] }

async function setup (t: Test): Promise<{ registry: Registry, scheduler: Scheduler, election: ElectionView }> {
  const registry = new Registry()
  const election: ElectionView = { leader: { peerId: SELF, term: 1 }, followed: [{ peerId: SELF, term: 1 }] }
  registry.put('deployment/d1', { id: 'd1', model: { name: 'anomaly', version: '1.0.0' }, replicas: 1, placement: { policy: 'spread' } }, SELF)
  const scheduler = new Scheduler({
    peerId: peerIdFromString(SELF),
    registry,
    // the other side's scheduler is not alive to this node yet: it still leads at term 1
    membership: { members: () => [member(SELF)] },
    election: {
      isLeader: () => election.leader.peerId === SELF,
      leader: () => election.leader,
      zone: 'default',
      leaderOf: () => election.leader,
      followed: () => election.followed
    },
    resolveBundle: () => BUNDLE,
    logger: pino({ level: process.env.LOG ?? 'silent' })
  }, { intervalMs: 50 })
  await scheduler.start()
  t.teardown(async () => { await scheduler.stop() })
  return { registry, scheduler, election }
}

const settle = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

t.test('a leader with no competing placement writes its own, once', async t => {
  const { registry, election } = await setup(t)
  await settle(500)
  t.same(registry.writes, ['placement/d1/' + SELF], 'one placement written, not rewritten while nothing changes')
  t.equal(winningPlacement(registry, 'd1', authority(election))?.scheduler, SELF)
})

t.test('a placement from a higher term arriving: the leader writes no more, and retires its own once the election moves', async t => {
  const { registry, election } = await setup(t)
  await settle(300)
  t.equal(registry.writes.length, 1, 'its own placement at term 1 first')
  const record: PlacementRecord = { term: 2, nodes: [OTHER], replicas: 1, bundle: BUNDLE, deploymentTs: [1, 0], at: Date.now() }
  registry.put(`placement/d1/${OTHER}`, record)
  await settle(1000)
  t.equal(registry.writes.length, 1, `no placement written after the term-2 one arrived (${registry.writes.length - 1} writes)`)
  t.match(winningPlacement(registry, 'd1', authority(election)), { scheduler: SELF, term: 1 }, 'a placement from a scheduler this node never followed counts for nothing')
  // the endorsements settle it: this node now follows OTHER at term 2
  election.leader = { peerId: OTHER, term: 2 }
  election.followed = [{ peerId: OTHER, term: 2 }, { peerId: SELF, term: 1 }]
  await settle(1000)
  t.equal(registry.writes.length, 1, 'still no placement written')
  t.equal(registry.get(`placement/d1/${SELF}`), undefined, 'its own term-1 placement is retired')
  t.match(winningPlacement(registry, 'd1', authority(election)), { scheduler: OTHER, term: 2 }, 'agents follow the term-2 placement')
})

t.test('equal terms: a placement from a node that does not lead counts for nothing, and the leader does not rewrite', async t => {
  const { registry, election } = await setup(t)
  await settle(300)
  const lower = '12D3KooWAJjbRkp8FPF5MKgMU53aUTxWkqvDrs4zc1VMbwRwfsbE'
  registry.put(`placement/d1/${lower}`, { term: 1, nodes: [lower], replicas: 1, bundle: BUNDLE, deploymentTs: [1, 0], at: Date.now() } satisfies PlacementRecord)
  await settle(1000)
  t.equal(registry.writes.length, 1, 'no rewrite loop')
  t.match(winningPlacement(registry, 'd1', authority(election)), { scheduler: SELF, term: 1 })
})

function authority (e: ElectionView): PlacementAuthority {
  return { leaderOf: () => e.leader, followed: () => e.followed }
}
