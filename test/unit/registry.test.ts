import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signEntry } from '../../node/registry/entry.ts'
import { compareTimestamps } from '../../node/registry/hlc.ts'
import { LevelRegistryStore } from '../../node/registry/store.ts'
import { openDatabase } from '../../node/store/db.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { DEFAULT_ZONE, topicFor } from '../../protocols/registry/zones.ts'
import { bucketOf, digestBuckets } from '../../protocols/registry-sync/index.ts'
import { MemoryMesh } from '../helpers/memory-mesh.ts'

async function twoMembers () {
  const mesh = new MemoryMesh()
  const a = await mesh.add()
  const b = await mesh.add()
  await mesh.introduce()
  await a.registry.start()
  await b.registry.start()
  t.teardown(async () => { await a.registry.stop(); await b.registry.stop() })
  return { mesh, a, b }
}

const flush = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)); await new Promise(resolve => setTimeout(resolve, 20)) }

t.test('own keys replicate through gossip; others\' keys are refused', async t => {
  const { a, b } = await twoMembers()
  const self = a.peerId.toString()
  await a.registry.set(`instance/${self}/x`, { state: 'running' })
  await flush()
  t.same(b.registry.value(`instance/${self}/x`), { state: 'running' })
  t.equal(b.registry.get(`instance/${self}/x`)?.writer, self)

  await t.rejects(a.registry.set(`node/${b.peerId.toString()}`, {}), { code: 'ERR_UNAUTHORIZED_WRITE' })
  await t.rejects(a.registry.set('deployment/d', { replicas: 1 }), { code: 'ERR_UNAUTHORIZED_WRITE' })
  await t.rejects(a.registry.set('../up', 1), { code: 'ERR_INVALID_VALUE' })
  await t.rejects(a.registry.set(`instance/${self}/big`, 'x'.repeat(70_000)), { code: 'ERR_INVALID_VALUE' })
})

t.test('fleet-authorised writes and deletes replicate', async t => {
  const { mesh, a, b } = await twoMembers()
  const value = { replicas: 3 }
  const auth = await mesh.authorize(a, 'deployment/d', value)
  await a.registry.set('deployment/d', value, { auth })
  await flush()
  t.same(b.registry.value('deployment/d'), value)
  await t.rejects(a.registry.delete('deployment/d'), { code: 'ERR_UNAUTHORIZED_WRITE' }, 'a delete needs its own authorisation')
  await b.registry.delete('deployment/d', { auth: await mesh.authorize(b, 'deployment/d', undefined) })
  await flush()
  t.equal(a.registry.value('deployment/d'), undefined)
  t.equal(a.registry.get('deployment/d')?.deleted, true, 'a tombstone remains')
  t.equal(a.registry.list('deployment/').length, 0)
  t.equal(a.registry.list('deployment/', { tombstones: true }).length, 1)
})

t.test('forged, foreign, unsigned and future entries are rejected', async t => {
  const { mesh, a, b } = await twoMembers()
  const self = a.peerId.toString()
  const send = async (entries: any[]): Promise<string> => await b.deliver({ type: 'unsigned', topic: topicFor(entries[0]?.k ?? '', DEFAULT_ZONE), data: deltaCodec.encode({ entries }) }, a.peerId)

  const good = await signEntry(a.privateKey, { k: `instance/${self}/ok`, v: '1', t: [Date.now(), 0], w: self })
  t.equal(await send([good]), 'accept')
  t.equal(await send([{ ...good, v: '2', t: [Date.now() + 5, 0] }]), 'reject', 'tampered value: signature fails')
  const foreignKey = await signEntry(a.privateKey, { k: `instance/${b.peerId.toString()}/x`, v: '1', t: [Date.now(), 0], w: self })
  t.equal(await send([foreignKey]), 'reject', 'a key owned by another node')
  const fleetKey = await signEntry(a.privateKey, { k: 'placement/p', v: '1', t: [Date.now(), 0], w: self })
  t.equal(await send([fleetKey]), 'reject', 'a fleet key without authorisation')
  const future = await signEntry(a.privateKey, { k: `instance/${self}/f`, v: '1', t: [Date.now() + 3_600_000, 0], w: self })
  t.equal(await send([future]), 'ignore', 'an hour in the future (ignored: drift is judged by our clock, not the relay\'s)')
  t.equal(b.registry.get(`instance/${self}/f`), undefined)

  const strangerKey = await generateKeyPair('Ed25519')
  const stranger = peerIdFromPrivateKey(strangerKey).toString()
  const unknown = await signEntry(strangerKey, { k: `instance/${stranger}/x`, v: '1', t: [Date.now(), 0], w: stranger })
  const { applied, rejected } = await b.registry.merge([unknown])
  t.same({ applied, rejected }, { applied: 0, rejected: 1 }, 'a writer without a fleet certificate')
  t.equal(b.registry.get(`instance/${stranger}/x`), undefined)
  t.equal(b.registry.get('placement/p'), undefined)
  t.equal(b.registry.value(`instance/${self}/ok`), 1, 'only the valid entry landed')
  void mesh
})

t.test('a node entry carrying its certificate introduces an unknown writer', async t => {
  const mesh = new MemoryMesh()
  // anti-entropy alone: gossip of the node entry could otherwise reach b first
  mesh.gossip = false
  const a = await mesh.add()
  const b = await mesh.add()
  await a.trust.learnCertificate(a.cert, a.peerId.toString())
  await b.trust.learnCertificate(b.cert, b.peerId.toString())
  await a.registry.start()
  await b.registry.start()
  t.teardown(async () => { await a.registry.stop(); await b.registry.stop() })
  const self = a.peerId.toString()
  await a.registry.set(`health/${self}`, { cpu: 1 })
  await a.registry.set(`node/${self}`, { role: 'gateway', cert: a.cert })
  const res = await b.registry.merge([...a.registry.wireEntries()])
  t.same(res, { applied: 2, rejected: 0 }, 'the node entry is verified first, then the health entry')
})

t.test('anti-entropy brings diverged replicas to the same state', async t => {
  const { mesh, a, b } = await twoMembers()
  mesh.gossip = false
  for (let i = 0; i < 50; i++) await a.registry.set(`instance/${a.peerId.toString()}/a${i}`, i)
  for (let i = 0; i < 30; i++) await b.registry.set(`instance/${b.peerId.toString()}/b${i}`, i)
  await b.registry.set(`instance/${b.peerId.toString()}/b0`, 'newer')
  t.not(digestBuckets(a.registry.wireEntries()).join(), digestBuckets(b.registry.wireEntries()).join())
  const result = await a.registry.syncWith(b.peerId)
  t.equal(result.received, 30)
  t.equal(result.sent, 50)
  t.same(digestBuckets(a.registry.wireEntries()), digestBuckets(b.registry.wireEntries()), 'identical bucket digests')
  t.equal(a.registry.value(`instance/${b.peerId.toString()}/b0`), 'newer')
  const again = await b.registry.syncWith(a.peerId)
  t.same(again, { differing: 0, received: 0, sent: 0 }, 'a second round has nothing to do')
})

t.test('health entries alone do not make anti-entropy ship buckets; they travel with buckets that differ', async t => {
  const { mesh, a, b } = await twoMembers()
  mesh.gossip = false
  const [sa, sb] = [a.peerId.toString(), b.peerId.toString()]
  await a.registry.set(`health/${sa}`, { cpu: 10 })
  await b.registry.set(`health/${sb}`, { cpu: 20 })
  t.same(await a.registry.syncWith(b.peerId), { differing: 0, received: 0, sent: 0 }, 'only health differs: nothing to exchange')
  t.equal(a.registry.value(`health/${sb}`), undefined)
  // a joining or diverged peer still gets health in the buckets that differ for other reasons
  let i = 0
  while (bucketOf(`instance/${sb}/i${i}`) !== bucketOf(`health/${sb}`)) i++
  await b.registry.set(`instance/${sb}/i${i}`, i)
  t.equal((await a.registry.syncWith(b.peerId)).differing, 1)
  t.same(a.registry.value(`health/${sb}`), { cpu: 20 }, 'health came along with a differing bucket')
})

t.test('state and clock survive a restart from level', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-registry-'))
  const privateKey = await generateKeyPair('Ed25519')
  const mesh = new MemoryMesh()
  let db = await openDatabase(dir)
  const first = await mesh.add({ privateKey, store: new LevelRegistryStore(db) })
  await mesh.introduce()
  await first.registry.start()
  const self = first.peerId.toString()
  const written = await first.registry.set(`instance/${self}/persist`, { n: 1 })
  await first.registry.delete(`instance/${self}/persist`)
  const tomb = first.registry.get(`instance/${self}/persist`)!
  await first.registry.stop()
  await db.close()

  db = await openDatabase(dir)
  t.teardown(async () => { await db.close() })
  const mesh2 = new MemoryMesh()
  const second = await mesh2.add({ privateKey, store: new LevelRegistryStore(db) })
  await second.registry.start()
  t.teardown(async () => { await second.registry.stop() })
  t.equal(second.registry.get(`instance/${self}/persist`)?.deleted, true, 'the tombstone was restored')
  const next = await second.registry.set(`instance/${self}/persist`, { n: 2 })
  t.ok(compareTimestamps(next.ts, tomb.ts) > 0 && compareTimestamps(next.ts, written.ts) > 0, 'the clock resumed past the stored entries')
})

t.test('watch yields changes under a prefix until closed', async t => {
  const { a, b } = await twoMembers()
  const watch = b.registry.watch('instance/')
  const self = a.peerId.toString()
  await a.registry.set(`health/${self}`, { ignored: true })
  await a.registry.set(`instance/${self}/w1`, 1)
  await a.registry.set(`instance/${self}/w2`, 2)
  const first = await watch.next()
  const second = await watch.next()
  t.equal(first.value.key, `instance/${self}/w1`)
  t.equal(first.value.via, 'gossip')
  t.equal(second.value.entry.value, 2)
  watch.close()
  t.same(await watch.next(), { done: true, value: undefined })

  const seen: string[] = []
  const off = a.registry.onChange('instance/', c => { seen.push(`${c.via}:${c.key}`) })
  await a.registry.set(`instance/${self}/w3`, 3)
  off()
  await a.registry.set(`instance/${self}/w4`, 4)
  t.same(seen, [`local:instance/${self}/w3`])
})
