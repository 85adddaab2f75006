import t from 'tap'
import { pino } from 'pino'
import { signEntry } from '../../node/registry/entry.ts'
import { Registry, type RegistryComponents } from '../../node/registry/registry.ts'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { DEFAULT_ZONE, topicFor } from '../../protocols/registry/zones.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import type { RegistryChange } from '../../node/registry/watch.ts'

const RETENTION = 600_000
const flush = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)); await new Promise(resolve => setTimeout(resolve, 20)) }

async function fleet (n: number, clock: { now: number }, store?: MemoryRegistryStore) {
  const mesh = new MemoryMesh()
  const members: MemoryMember[] = []
  for (let i = 0; i < n; i++) members.push(await mesh.add({ ...(i === 0 && store != null ? { store } : {}), init: { retentionMs: RETENTION, now: () => clock.now } }))
  await mesh.introduce()
  for (const m of members) await m.registry.start()
  t.teardown(async () => { for (const m of members) await m.registry.stop() })
  return { mesh, members }
}

t.test('tombstones and departed nodes\' entries are collected on every node; live entries are kept alive by their writers', async t => {
  const clock = { now: Date.now() }
  const { members: [a, b, c] } = await fleet(3, clock)
  const [self, gone] = [a!.peerId.toString(), c!.peerId.toString()]
  await a!.registry.set(`instance/${self}/keep`, { state: 'running' })
  await a!.registry.set(`instance/${self}/del`, { state: 'running' })
  await a!.registry.delete(`instance/${self}/del`)
  await c!.registry.set(`node/${gone}`, { role: 'gateway' })
  await flush()
  const oldPut = [...a!.registry.wireEntries()].find(e => e.k === `instance/${self}/keep`)!
  t.equal(b!.registry.get(`instance/${self}/del`)?.deleted, true, 'the tombstone arrived')
  await c!.registry.stop()

  const heard: RegistryChange[] = []
  b!.registry.onChange('node/', change => { heard.push(change) })
  clock.now += RETENTION / 2 + 1
  for (const m of [a!, b!]) await m.registry.sweep()
  await flush()
  t.ok(b!.registry.get(`instance/${self}/keep`)!.ts[0] > oldPut.t[0], 'a live entry half way to expiry is written again, and the new stamp travels')
  t.equal(b!.registry.get(`instance/${self}/del`)?.deleted, true, 'a tombstone younger than the retention stays')

  clock.now += RETENTION / 2
  for (const m of [a!, b!]) await m.registry.sweep()
  await flush()
  for (const m of [a!, b!]) {
    t.equal(m.registry.get(`instance/${self}/del`), undefined, 'the tombstone is collected')
    t.same(m.registry.value(`instance/${self}/keep`), { state: 'running' }, 'the live entry is still there')
  }
  t.equal(b!.registry.get(`node/${gone}`), undefined, 'the departed node\'s record is collected')
  t.same(heard.map(h => [h.key, h.via, h.entry.deleted]), [[`node/${gone}`, 'expiry', true]], 'and listeners hear it vanish')

  // an old replica syncs back what it held before the delete
  const oldDel = await signEntry(a!.privateKey, { k: `instance/${self}/del`, v: '{"state":"running"}', t: [clock.now - RETENTION - 5, 0], w: self })
  t.same(await b!.registry.merge([oldDel]), { applied: 0, rejected: 0 }, 'an entry older than the retention is refused, before any crypto')
  t.equal(await b!.deliver({ type: 'unsigned', topic: topicFor(oldDel.k, DEFAULT_ZONE), data: deltaCodec.encode({ entries: [oldDel] }) }, a!.peerId), 'ignore', 'and not forwarded')
  t.equal(b!.registry.get(`instance/${self}/del`), undefined, 'the deleted value stays deleted')
})

t.test('after downtime past the retention, a node keeps and rewrites its own live entries and drops the rest', async t => {
  const clock = { now: Date.now() }
  const store = new MemoryRegistryStore()
  const { members: [a, b] } = await fleet(2, clock, store)
  const [self, other] = [a!.peerId.toString(), b!.peerId.toString()]
  await a!.registry.set(`instance/${self}/x`, 1)
  await a!.registry.delete(`instance/${self}/y`)
  await b!.registry.set(`instance/${other}/z`, 2)
  await flush()
  await a!.registry.stop()
  t.equal(store.entries.size, 3)

  clock.now += RETENTION * 3
  const restarted = new Registry({ ...componentsOf(a!), store }, { retentionMs: RETENTION, now: () => clock.now })
  await restarted.start()
  t.teardown(async () => { await restarted.stop() })
  t.same(restarted.list('', { tombstones: true }).map(e => e.key), [`instance/${self}/x`], 'its own live entry is kept, the tombstone and the other node\'s entry are gone')
  t.ok(restarted.get(`instance/${self}/x`)!.ts[0] >= clock.now, 'and written again with a fresh stamp at start')
  await restarted.stop()
  await new Promise(resolve => setTimeout(resolve, 10))
  t.same([...store.entries.keys()], [`instance/${self}/x`], 'the disk follows')
})

/** A member's identity and trust on a mesh of its own: a node restarted with nobody to talk to. */
function componentsOf (m: MemoryMember): Omit<RegistryComponents, 'store'> {
  return {
    peerId: m.peerId,
    privateKey: m.privateKey,
    pubsub: { topicValidators: new Map(), subscribe () {}, unsubscribe () {}, publish: async () => ({ recipients: [] }), addEventListener () {}, removeEventListener () {} } as unknown as RegistryComponents['pubsub'],
    network: { handle: async () => {}, unhandle: async () => {}, dialProtocol: async () => { throw new Error('offline') } },
    trust: m.trust,
    logger: pino({ level: 'silent' })
  }
}
