import t from 'tap'
import { DeltaStream, type Delta, type DeltaTarget } from '../../coordinator/routes/delta-stream.ts'
import { NodesView, type NodesChange } from '../../coordinator/nodes/view.ts'
import type { NodeView } from '../../coordinator/nodes/monitoring.ts'
import type { Member } from '../../node/membership/membership.ts'
import type { RegistryEntry } from '../../node/registry/entry.ts'
import type { ChangeListener } from '../../node/registry/watch.ts'

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** A registry and membership of `n` gateways in memory, counting what the view asks of them. */
function fleet (n: number) {
  const values = new Map<string, unknown>()
  const members = new Map<string, Member>()
  const listeners: Array<{ prefix: string, fn: ChangeListener }> = []
  const calls = { value: 0, member: 0, members: 0 }
  for (let i = 0; i < n; i++) {
    const peerId = `p${String(i).padStart(4, '0')}`
    members.set(peerId, { peerId, self: false, role: 'gateway', labels: { zone: 'a' }, addresses: [], state: 'alive', lastSeenMs: 0, since: 1, health: { cpuPct: 1 } as any })
    values.set(`node/${peerId}`, { version: '1', sensors: [{ id: 's', type: 'temperature' }] })
  }
  values.set('instance/p0001/flow', { state: 'running', model: 'flow' })
  const membership = new EventTarget()
  const write = (key: string, value: unknown): void => {
    if (value === undefined) values.delete(key)
    else values.set(key, value)
    const entry: RegistryEntry = { key, value, deleted: value === undefined, ts: [Date.now(), 0], writer: 'w' }
    for (const l of listeners) if (key.startsWith(l.prefix)) l.fn({ key, entry, via: 'gossip' })
  }
  const view = new NodesView({
    registry: {
      list: (prefix = '') => [...values].filter(([k]) => k.startsWith(prefix)).map(([key, value]) => ({ key, value, deleted: false, ts: [1, 0], writer: 'w' })) as any,
      value: ((key: string) => { calls.value++; return values.get(key) }) as any,
      onChange: (prefix, fn) => { const l = { prefix, fn }; listeners.push(l); return () => { listeners.splice(listeners.indexOf(l), 1) } }
    },
    members: () => { calls.members++; return [...members.values()] },
    member: id => { calls.member++; return members.get(id) },
    membership
  }, { refreshMs: 60_000, sweepMs: 60_000 })
  return { view, values, members, membership, calls, write }
}

t.test('a change to one of 1000 nodes recomputes that node only', async t => {
  const f = fleet(1000)
  await f.view.start()
  t.teardown(async () => { await f.view.stop() })
  t.equal(f.view.list().length, 1000)
  t.equal(f.view.get('p0001')?.instances.running, 1)
  const changes: NodesChange[] = []
  f.view.addEventListener('change', evt => { changes.push(evt.detail) })
  for (const k of Object.keys(f.calls) as Array<keyof typeof f.calls>) f.calls[k] = 0

  f.members.get('p0500')!.health = { cpuPct: 90 } as any
  f.write('health/p0500', { cpuPct: 90 })
  f.write('health/p0500', { cpuPct: 90 })
  f.view.refresh()
  t.same(f.calls, { value: 1, member: 1, members: 0 }, 'one member and one record read, never the whole fleet')
  t.equal(changes.length, 1)
  t.same(changes[0]!.changed.map(n => n.peerId), ['p0500'])
  t.equal(changes[0]!.models, false, 'no instance or state changed: the model status is not recomputed')
  t.equal(f.view.get('p0500')?.health?.cpuPct, 90)
  t.equal(JSON.parse(f.view.json()).nodes.find((n: NodeView) => n.peerId === 'p0500').health.cpuPct, 90, 'the list JSON follows')

  f.view.refresh()
  t.equal(changes.length, 1, 'nothing marked, nothing done')
  t.equal(f.calls.member, 1)

  f.write('instance/p0002/flow', { state: 'failed', model: 'flow' })
  f.view.refresh()
  t.same(changes[1]!.changed.map(n => n.peerId), ['p0002'], 'an instance entry marks its node')
  t.equal(changes[1]!.models, true)
  t.match(f.view.models(), [{ model: 'flow', states: { running: 1, failed: 1 } }])
  t.equal(f.view.instances('p0002').length, 1)

  f.members.delete('p0003')
  f.membership.dispatchEvent(new CustomEvent('member:state', { detail: { peerId: 'p0003', state: 'dead' } }))
  f.view.refresh()
  t.same(changes[2]!.removed, ['p0003'], 'a member gone is removed')
  t.equal(f.view.list().length, 999)
  t.equal(f.calls.members, 0, 'membership was never listed whole')
})

t.test('the sweep catches clock changes that come without an event, and only those nodes change', async t => {
  const f = fleet(50)
  const view = new NodesView({ registry: { list: () => [], value: () => undefined, onChange: () => () => {} }, members: () => [...f.members.values()], member: id => f.members.get(id) }, { refreshMs: 60_000, sweepMs: 50 })
  await view.start()
  t.teardown(async () => { await view.stop() })
  const changes: NodesChange[] = []
  view.addEventListener('change', evt => { changes.push(evt.detail) })
  f.members.get('p0008')!.clockOffsetMs = -3000
  await sleep(200)
  t.same(changes.flatMap(c => c.changed.map(n => `${n.peerId} ${n.clock.offsetSec}`)), ['p0008 -3'])
})

t.test('a node whose view fails keeps its last good view; the others still update', async t => {
  const f = fleet(3)
  const errors: unknown[] = []
  const view = new NodesView({
    registry: { list: () => [], value: ((k: string) => { if (k === 'node/p0001' && f.values.get(k) === 'boom') throw new Error('hostile'); return f.values.get(k) }) as any, onChange: () => () => {} },
    members: () => [...f.members.values()],
    member: id => f.members.get(id),
    membership: f.membership,
    logger: { error: (obj: unknown) => { errors.push(obj) } } as any
  })
  view.refresh()
  f.values.set('node/p0001', 'boom')
  f.members.get('p0001')!.state = 'suspect'
  f.members.get('p0002')!.state = 'suspect'
  await view.start()
  t.teardown(async () => { await view.stop() })
  f.membership.dispatchEvent(new CustomEvent('member:state', { detail: { peerId: 'p0001' } }))
  f.membership.dispatchEvent(new CustomEvent('member:state', { detail: { peerId: 'p0002' } }))
  t.doesNotThrow(() => { view.refresh() })
  t.equal(view.get('p0001')?.state, 'alive', 'the failing node keeps its last good view')
  t.equal(view.get('p0002')?.state, 'suspect', 'the other node updated')
  t.equal(errors.length, 1)
})

/** An event stream in memory: what was sent, when, and whether it lags. */
function target (): DeltaTarget & { sent: Array<{ event: string, data: any, at: number }>, reason?: string, lag: boolean, drain: () => void } {
  const closers: Array<() => void> = []
  let onDrain = (): void => {}
  let closed = false
  const t = {
    sent: [] as Array<{ event: string, data: any, at: number }>,
    reason: undefined as string | undefined,
    lag: false,
    get closed () { return closed },
    get blocked () { return t.lag },
    send (event: string, data: unknown) { t.sent.push({ event, data, at: Date.now() }) },
    close (reason: string) { if (closed) return; closed = true; t.reason = reason; for (const fn of closers) fn() },
    onDrain (fn: () => void) { onDrain = fn },
    onClose (fn: () => void) { closers.push(fn) },
    drain () { t.lag = false; onDrain() }
  }
  return t as any
}

const node = (peerId: string, cpuPct: number): NodeView => ({ peerId, health: { cpuPct } } as any)

t.test('a stream gets at most one delta per batch, each node once with its latest state, removals included', async t => {
  const s = target()
  const deltas = new DeltaStream(s, { batchMs: 300 })
  deltas.send('snapshot', { nodes: [] })
  const start = Date.now()
  let models = 0
  // ten changes a node for a bit over three batches
  while (Date.now() - start < 1000) {
    for (let i = 0; i < 10; i++) deltas.node(node(`p${i}`, Date.now() - start))
    deltas.field('models', () => ++models)
    await sleep(20)
  }
  deltas.removed('p3')
  await sleep(700)
  const sent = s.sent.slice(1)
  t.ok(sent.length >= 3 && sent.length <= 5, `${sent.length} deltas in ~1.7 s at one per 300 ms`)
  for (let i = 1; i < s.sent.length; i++) t.ok(s.sent[i]!.at - s.sent[i - 1]!.at >= 295, `message ${i} ${s.sent[i]!.at - s.sent[i - 1]!.at} ms after the one before`)
  for (const { event, data } of sent) {
    t.equal(event, 'delta')
    const ids = (data as Delta).nodes.map(n => n.peerId)
    t.equal(new Set(ids).size, ids.length, 'each node once')
  }
  const last = sent.at(-1)!.data as Delta
  t.same(last.removed, ['p3'], 'the removal is in the last delta')
  t.notOk(last.nodes.some(n => n.peerId === 'p3'), 'and replaces the node\'s pending change')
  t.equal(models, sent.filter(d => 'models' in d.data).length, 'a whole-state field is computed only when sent')
  t.ok(sent.every(d => d.data.models == null || d.data.models >= 1))
  const first = sent[0]!.data as Delta
  t.ok(first.nodes.every(n => n.health!.cpuPct >= 250), 'the first delta carries the latest state, not the first change')
})

t.test('a reader that never reads is capped and closed as a slow consumer', async t => {
  const s = target()
  const deltas = new DeltaStream(s, { batchMs: 50, maxPending: 100, maxLagMs: 200 })
  s.lag = true
  for (let i = 0; i < 100; i++) deltas.node(node(`p${i}`, 1))
  await sleep(120)
  t.equal(s.sent.length, 0, 'nothing is written while the socket waits for drain')
  t.equal(s.closed, false, 'a full pending set is still within the cap')
  deltas.node(node('p100', 1))
  t.equal(s.reason, 'slow-consumer', 'one node past maxPending closes it')

  const lagging = target()
  const d2 = new DeltaStream(lagging, { batchMs: 50, maxPending: 100, maxLagMs: 200 })
  lagging.lag = true
  d2.node(node('a', 1))
  await sleep(150)
  t.equal(lagging.closed, false)
  lagging.drain()
  await sleep(20)
  t.equal(lagging.sent.length, 1, 'a reader that drains in time gets what waited')
  lagging.lag = true
  d2.node(node('a', 2))
  await sleep(400)
  t.equal(lagging.reason, 'slow-consumer', 'one that does not drain for maxLagMs is closed')
})
