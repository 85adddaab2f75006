import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { pino } from 'pino'
import { Deployments, type DeploymentView } from '../../coordinator/deployments/service.ts'
import { EventStream } from '../../node/api/event-stream.ts'
import { openDatabase } from '../../node/store/db.ts'
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

t.test('a read applies the changes that arrived since the last refresh: the API is never behind the registry', async t => {
  const f = fleet(3)
  await f.view.start()
  t.teardown(async () => { await f.view.stop() })
  t.match(f.view.models(), [{ model: 'flow', states: { running: 1 } }])
  // no refresh timer runs here (60 s): only the read can apply it
  f.write('instance/p0002/flow', { state: 'starting', model: 'flow' })
  t.match(f.view.models(), [{ model: 'flow', states: { running: 1, starting: 1 } }], 'models')
  f.write('instance/p0002/flow', { state: 'running', model: 'flow' })
  t.equal(f.view.instances().filter(i => i.state === 'running').length, 2, 'instances')
  f.members.get('p0000')!.health = { cpuPct: 70 } as any
  f.write('health/p0000', { cpuPct: 70 })
  t.equal(f.view.get('p0000')?.health?.cpuPct, 70, 'one node')
  f.members.get('p0001')!.health = { cpuPct: 71 } as any
  f.write('health/p0001', { cpuPct: 71 })
  t.equal(f.view.list().find(n => n.peerId === 'p0001')?.health?.cpuPct, 71, 'the list')
  f.members.get('p0002')!.health = { cpuPct: 72 } as any
  f.write('health/p0002', { cpuPct: 72 })
  t.equal(JSON.parse(f.view.json()).nodes.find((n: NodeView) => n.peerId === 'p0002').health.cpuPct, 72, 'the list as JSON')
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

  const reading = target()
  const d1 = new DeltaStream(reading, { batchMs: 50, maxPending: 100, maxLagMs: 200 })
  for (let i = 0; i < 300; i++) d1.node(node(`p${i}`, 1))
  await sleep(120)
  t.equal(reading.closed, false, 'a reader that keeps up is not held to the cap')
  t.equal(reading.sent[0]?.data.nodes.length, 300)

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

t.test('over a real socket that is never read, the stream stops writing and is closed as a slow consumer', async t => {
  let stream: EventStream | undefined
  let deltas: DeltaStream | undefined
  const server = createServer((_req, res) => {
    stream = new EventStream(res, { heartbeatMs: 60_000, maxPendingBytes: 2 * 1024 * 1024 }, () => {})
    deltas = new DeltaStream(stream, { batchMs: 20, maxLagMs: 500 })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const socket = connect((server.address() as any).port, '127.0.0.1')
  socket.on('error', () => {})
  socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n')
  socket.pause()
  while (deltas == null) await sleep(10)
  const pad = 'x'.repeat(64 * 1024)
  let rounds = 0
  let maxHeld = 0
  // 64 nodes of 64 KiB changing every 20 ms: far more than a paused socket takes
  while (!stream!.closed && rounds < 500) {
    for (let i = 0; i < 64; i++) deltas.node({ peerId: `p${i}`, pad: `${rounds}${pad}` } as any)
    maxHeld = Math.max(maxHeld, stream!.bufferedBytes)
    rounds++
    await sleep(20)
  }
  t.ok(stream!.closed, `closed after ${rounds} rounds of changes`)
  t.ok(maxHeld < 16 * 1024 * 1024, `at most ${(maxHeld / 1048576).toFixed(1)} MiB held for it: writing stopped while the socket waited for drain`)
  socket.resume()
  const text = await new Promise<string>(resolve => {
    let got = ''
    socket.setEncoding('utf8').on('data', (d: string) => { got += d }).on('close', () => { resolve(got) })
    setTimeout(() => { resolve(got) }, 5000).unref()
  })
  t.ok(text.includes('event: close\ndata: {"reason":"slow-consumer"}\n\n'), 'the stream ends saying why')
})

t.test('deployments: an instance change recomputes its deployment only; a node\'s endpoint change reaches every view', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-views-'))
  const db = await openDatabase(dir)
  t.teardown(async () => { await db.close(); await rm(dir, { recursive: true, force: true }) })
  const values = new Map<string, unknown>()
  const members = new Map<string, Member>()
  const listeners: Array<{ prefix: string, fn: ChangeListener }> = []
  const reads = new Map<string, number>()
  for (let i = 0; i < 1000; i++) {
    const peerId = `p${String(i).padStart(4, '0')}`
    members.set(peerId, { peerId, self: false, role: 'gateway', labels: {}, addresses: [], state: 'alive', lastSeenMs: 0, since: 1 })
    values.set(`node/${peerId}`, { api: `http://${peerId}:7401` })
  }
  for (const id of ['a', 'b', 'c']) {
    values.set(`deployment/${id}`, { id, model: { name: `m-${id}`, version: '1' } })
    values.set(`instance/p0001/m-${id}`, { state: 'running', deployment: id })
  }
  const entry = (key: string, value: unknown): RegistryEntry => ({ key, value, deleted: value === undefined, ts: [Date.now(), 0], writer: 'w' })
  const write = (key: string, value: unknown): void => {
    if (value === undefined) values.delete(key)
    else values.set(key, value)
    for (const l of listeners) if (key.startsWith(l.prefix)) l.fn({ key, entry: entry(key, value), via: 'gossip' })
  }
  const deployments = new Deployments({
    registry: {
      list: ((prefix = '') => [...values].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => a < b ? -1 : 1).map(([k, v]) => entry(k, v))) as any,
      get: ((key: string) => { reads.set(key, (reads.get(key) ?? 0) + 1); return values.has(key) ? entry(key, values.get(key)) : undefined }) as any,
      value: ((key: string) => values.get(key)) as any,
      set: async () => { throw new Error('not in this test') },
      delete: async () => { throw new Error('not in this test') },
      onChange: (prefix, fn) => { const l = { prefix, fn }; listeners.push(l); return () => { listeners.splice(listeners.indexOf(l), 1) } },
      stampFor: () => { throw new Error('not in this test') }
    },
    placements: { leaderOf: () => undefined, followed: () => [] },
    members: () => [...members.values()],
    member: id => members.get(id),
    db,
    signer: { key: undefined as any },
    logger: pino({ level: 'silent' })
  }, { refreshMs: 60_000, tickMs: 60_000 })
  await deployments.start()
  t.teardown(async () => { await deployments.stop() })
  t.same(deployments.list().map(d => `${d.id} ${d.running}`), ['a 1', 'b 1', 'c 1'])
  t.equal(deployments.get('a').endpoints.length, 1000)
  const changes: DeploymentView[][] = []
  deployments.addEventListener('change', evt => { changes.push(evt.detail) })
  reads.clear()

  write('instance/p0001/m-b', { state: 'failed', reason: 'oom', deployment: 'b' })
  deployments.refresh()
  t.same([...reads.keys()], ['instance/p0001/m-b'], 'only deployment b read its instances again')
  t.equal(changes.length, 1)
  t.match(deployments.get('b'), { running: 0, instances: [{ node: 'p0001', state: 'failed', reason: 'oom' }] })

  reads.clear()
  write('health/p0500', { cpuPct: 3 })
  write('node/p0500', { api: 'http://moved:7401' })
  deployments.refresh()
  t.equal(changes.length, 2)
  t.ok(deployments.list().every(d => d.endpoints.some(e => e.url === `http://moved:7401/v1/models/${d.model}:predict`)), 'every view carries the moved endpoint')

  members.get('p0001')!.state = 'dead'
  write('node/p0001', values.get('node/p0001'))
  deployments.refresh()
  t.ok(deployments.list().every(d => d.instances[0]!.state === 'lost'), 'a dead node\'s instances are lost')
  t.ok(deployments.list().every(d => d.endpoints.length === 999), 'and its endpoint is gone')

  write('deployment/c', undefined)
  deployments.refresh()
  t.same(deployments.list().map(d => d.id), ['a', 'b'], 'a deleted deployment leaves the list')
  write('deployment/a', { id: 'not-a', model: { name: 'x', version: '1' } })
  deployments.refresh()
  t.same(deployments.list().map(d => d.id), ['b'], 'a spec for another id is not a deployment')
})
