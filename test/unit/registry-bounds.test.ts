import t from 'tap'
import { pino } from 'pino'
import { signEntry } from '../../node/registry/entry.ts'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { authorizeRegistryWrite, issuePublisherCert } from '../../packaging/trust.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { DEFAULT_ZONE, topicFor } from '../../protocols/registry/zones.ts'
import { revocationKey } from '../../protocols/registry/revocation.ts'
import { MAX_COUNTER } from '../../protocols/registry/wire.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import { generateKeyPairSync } from 'node:crypto'
import type { Logger } from 'pino'

const flush = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)); await new Promise(resolve => setTimeout(resolve, 20)) }

function capture (): { logger: Logger, lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = []
  return { logger: pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line)) } }) as unknown as Logger, lines }
}

function counters (): { rejected: Map<string, number>, refused: Map<string, number>, offsets: Map<string, number>, metrics: any } {
  const rejected = new Map<string, number>()
  const refused = new Map<string, number>()
  const offsets = new Map<string, number>()
  return {
    rejected,
    refused,
    offsets,
    metrics: {
      gossipIn () {},
      gossipOut () {},
      synced () {},
      rejected: (r: string) => { rejected.set(r, (rejected.get(r) ?? 0) + 1) },
      writerRefused: (w: string, r: string) => { refused.set(`${w}:${r}`, (refused.get(`${w}:${r}`) ?? 0) + 1) },
      clockOffset: (w: string, ms: number) => { offsets.set(w, ms) }
    }
  }
}

async function pair (options: { quota?: Record<string, number>, b?: Parameters<MemoryMesh['add']>[0] } = {}): Promise<{ mesh: MemoryMesh, a: MemoryMember, b: MemoryMember }> {
  const mesh = new MemoryMesh()
  const a = await mesh.add({ init: { quota: { maxKeys: 1e6, maxBytes: 1e9, entriesPerSec: 1e6, burst: 1e6 } } })
  const b = await mesh.add({ ...options.b, init: { ...options.b?.init, ...(options.quota == null ? {} : { quota: options.quota }) } })
  await mesh.introduce()
  await a.registry.start()
  await b.registry.start()
  t.teardown(async () => { await a.registry.stop(); await b.registry.stop() })
  return { mesh, a, b }
}

const gossip = async (to: MemoryMember, from: MemoryMember, entries: any[]): Promise<string> =>
  await to.deliver({ type: 'unsigned', topic: topicFor(entries[0]?.k ?? '', DEFAULT_ZONE), data: deltaCodec.encode({ entries }) }, from.peerId)

t.test('a writer is held to its quota of keys and bytes, whichever way its entries come', async t => {
  const c = counters()
  const { a, b } = await pair({ quota: { maxKeys: 20, maxBytes: 10_000, entriesPerSec: 1e6, burst: 1e6 }, b: { components: { metrics: c.metrics } } })
  const self = a.peerId.toString()
  const entries = []
  for (let i = 0; i < 30; i++) entries.push(await signEntry(a.privateKey, { k: `instance/${self}/k${i}`, v: JSON.stringify('x'.repeat(100)), t: [Date.now(), i], w: self }))
  const merged = await b.registry.merge(entries)
  t.equal(merged.applied, 20, 'anti-entropy: 20 keys land')
  t.equal(b.registry.usage(self).keys, 20)
  t.equal(await gossip(b, a, [await signEntry(a.privateKey, { k: `instance/${self}/more`, v: '1', t: [Date.now(), 99], w: self })]), 'ignore', 'gossip past the quota is ignored, not forwarded')
  t.ok((c.refused.get(`${self}:ERR_QUOTA_EXCEEDED`) ?? 0) >= 10, 'the refusals are counted against the writer')
  // shrinking stays possible at the limit
  const tomb = await signEntry(a.privateKey, { k: `instance/${self}/k0`, v: null, t: [Date.now() + 1, 0], w: self })
  t.equal((await b.registry.merge([tomb])).applied, 1, 'a writer at its limit can still delete')

  const big = []
  for (let i = 0; i < 3; i++) big.push(await signEntry(a.privateKey, { k: `instance/${self}/k${i + 1}`, v: JSON.stringify('y'.repeat(4000)), t: [Date.now() + 2, i], w: self }))
  await b.registry.merge(big)
  t.ok(b.registry.usage(self).bytes <= 10_000, `bytes stay within the quota (${b.registry.usage(self).bytes})`)

  // tombstones of keys never written count against the bytes: a flood of deletes is bounded too
  const tombs = []
  for (let i = 0; i < 200; i++) tombs.push(await signEntry(a.privateKey, { k: `instance/${self}/gone${i}`, v: null, t: [Date.now() + 3, i], w: self }))
  await b.registry.merge(tombs)
  t.ok(b.registry.usage(self).bytes <= 10_000, `a flood of tombstones stays within the bytes (${b.registry.usage(self).bytes})`)
  t.ok(b.registry.list(`instance/${self}/gone`, { tombstones: true }).length < 200, 'and not all of them landed')

  // local writes are held to the node's own quota too
  const local = await (new MemoryMesh()).add({ init: { quota: { maxKeys: 16, maxBytes: 65_536, entriesPerSec: 1, burst: 1 } } })
  await local.registry.start()
  t.teardown(async () => { await local.registry.stop() })
  const me = local.peerId.toString()
  for (let i = 0; i < 16; i++) await local.registry.set(`instance/${me}/k${i}`, i)
  await t.rejects(local.registry.set(`instance/${me}/k16`, 16), { code: 'ERR_QUOTA_EXCEEDED' })
  await local.registry.set(`instance/${me}/k3`, 'replaced')
  t.pass('an existing key can still be rewritten')
})

t.test('a writer past its gossip rate is ignored until its budget refills', async t => {
  const { a, b } = await pair({ quota: { maxKeys: 4096, maxBytes: 4e6, entriesPerSec: 10, burst: 20 } })
  const self = a.peerId.toString()
  const batch = async (from: number, n: number): Promise<any[]> => await Promise.all(Array.from({ length: n }, async (_, i) => await signEntry(a.privateKey, { k: `instance/${self}/r${from + i}`, v: '1', t: [Date.now(), from + i], w: self })))
  t.equal(await gossip(b, a, await batch(0, 15)), 'accept')
  t.equal(await gossip(b, a, await batch(15, 15)), 'ignore', 'past the burst')
  await new Promise(resolve => setTimeout(resolve, 1600))
  t.equal(await gossip(b, a, await batch(30, 10)), 'accept', 'the budget refills')
})

t.test('values nested deeper than the bound are refused before anything walks them', async t => {
  const { a, b } = await pair()
  const self = a.peerId.toString()
  const deep = '['.repeat(5000) + ']'.repeat(5000)
  await t.rejects(a.registry.set(`node/${self}`, JSON.parse(deep)), { code: 'ERR_INVALID_VALUE' }, 'a local write')
  const e = await signEntry(a.privateKey, { k: `node/${self}`, v: `{"sensors":[{"geo":${deep}}]}`, t: [Date.now(), 0], w: self })
  t.same(await b.registry.merge([e]), { applied: 0, rejected: 1 }, 'anti-entropy')
  t.equal(await gossip(b, a, [e]), 'reject', 'gossip')
  t.equal(b.registry.get(`node/${self}`), undefined)
  const ok = await signEntry(a.privateKey, { k: `node/${self}`, v: JSON.stringify({ a: [[[[1]]]] }), t: [Date.now(), 1], w: self })
  t.equal((await b.registry.merge([ok])).applied, 1, 'ordinary nesting passes')
})

t.test('refusals for clock drift are logged at warn, rate-limited, naming the writer and the offset, and counted per writer', async t => {
  const log = capture()
  const c = counters()
  const { a, b } = await pair({ b: { components: { logger: log.logger, metrics: c.metrics } } })
  const self = a.peerId.toString()
  for (let i = 0; i < 5; i++) {
    const e = await signEntry(a.privateKey, { k: `instance/${self}/f${i}`, v: '1', t: [Date.now() + 300_000, i], w: self })
    await b.registry.merge([e])
  }
  const warns = log.lines.filter(l => l.level === 40 && l.reason === 'ERR_CLOCK_DRIFT')
  t.equal(warns.length, 1, 'one warning for five refusals')
  t.equal(warns[0]?.writer, self, 'naming the writer')
  t.ok(warns[0]?.offsetMs > 290_000 && warns[0]?.offsetMs < 310_000, `and the offset (${warns[0]?.offsetMs} ms)`)
  t.match(warns[0]?.msg, /clock is (29\d|30\d) s ahead/)
  t.equal(c.refused.get(`${self}:ERR_CLOCK_DRIFT`), 5, 'every refusal counted against the writer')
  t.ok((c.offsets.get(self) ?? 0) > 290_000, 'the offset is exported')
})

t.test('a revocation drops the writer and refuses it from then on', async t => {
  const { mesh, a, b } = await pair()
  const c = await mesh.add()
  await mesh.introduce()
  await c.registry.start()
  t.teardown(async () => { await c.registry.stop() })
  const victim = c.peerId.toString()
  await c.registry.set(`instance/${victim}/x`, 1)
  await c.registry.set(`node/${victim}`, { role: 'gateway', cert: c.cert })
  await flush()
  t.equal(b.registry.value(`instance/${victim}/x`), 1)
  const changes: string[] = []
  b.registry.onChange('', ch => { changes.push(`${ch.via}:${ch.key}:${String(ch.entry.deleted)}`) })

  const record = { reason: 'stolen', revokedAt: Date.now(), by: 'test' }
  await a.registry.set(revocationKey(victim), record, { auth: await mesh.authorize(a, revocationKey(victim), record) })
  await flush()
  for (const m of [a, b]) {
    t.ok(m.trust.revoked.has(victim), 'trust told')
    t.equal(m.registry.get(`instance/${victim}/x`), undefined, 'its entries are gone')
    t.equal(m.registry.get(`node/${victim}`), undefined, 'its node record too')
  }
  t.ok(changes.includes(`revocation:instance/${victim}/x:true`), 'listeners heard the keys vanish')
  t.same(b.registry.revocations().map(r => r.peerId), [victim])

  const late = await signEntry(c.privateKey, { k: `instance/${victim}/late`, v: '1', t: [Date.now(), 5], w: victim })
  t.same(await b.registry.merge([late]), { applied: 0, rejected: 1 }, 'its entries are refused from then on')
  await t.rejects(a.registry.delete(revocationKey(victim), { auth: await mesh.authorize(a, revocationKey(victim), undefined) }), { code: 'ERR_INVALID_VALUE' }, 'a revocation cannot be deleted')

  // only the fleet key may revoke: a publisher's authorisation is refused
  const pub = generateKeyPairSync('ed25519')
  const publisherCert = await issuePublisherCert(mesh.fleet.privateKey, 'ci', pub.publicKey)
  const other = b.peerId.toString()
  const { writer, ts } = a.registry.stampFor(revocationKey(other))
  const byPublisher = await authorizeRegistryWrite({ key: revocationKey(other), valueJson: JSON.stringify(record), writer, ts }, { key: pub.privateKey, publisherCert })
  await t.rejects(a.registry.set(revocationKey(other), record, { auth: byPublisher }), { code: 'ERR_UNAUTHORIZED_WRITE' })
  t.notOk(a.trust.revoked.has(other))
})

t.test('a node heals its registry at start: poisoned stamps, deep values, foreign keys and revoked writers are dropped', async t => {
  const mesh = new MemoryMesh()
  const peer = await mesh.add()
  const store = new MemoryRegistryStore()
  const log = capture()
  const node = await mesh.add({ store, components: { logger: log.logger } })
  await mesh.introduce()
  const self = node.peerId.toString()
  const other = peer.peerId.toString()
  const now = Date.now()
  const record = { reason: 'x', revokedAt: now, by: 'test' }
  const revocation = await signEntry(node.privateKey, {
    k: revocationKey(other),
    v: JSON.stringify(record),
    t: [now, 0],
    w: self,
    a: await authorizeRegistryWrite({ key: revocationKey(other), valueJson: JSON.stringify(record), writer: self, ts: [now, 0] }, { key: mesh.fleet.privateKey })
  })
  const raw: Array<[string, unknown]> = [
    [`instance/${self}/ok`, await signEntry(node.privateKey, { k: `instance/${self}/ok`, v: '1', t: [now + 10_000, MAX_COUNTER], w: self })],
    [`instance/${self}/over`, await signEntry(node.privateKey, { k: `instance/${self}/over`, v: '1', t: [now + 50_000, 2 ** 31 + 5], w: self })],
    [`instance/${self}/future`, await signEntry(node.privateKey, { k: `instance/${self}/future`, v: '1', t: [now + 3_600_000, 0], w: self })],
    [`instance/${self}/deep`, await signEntry(node.privateKey, { k: `instance/${self}/deep`, v: '['.repeat(100) + ']'.repeat(100), t: [now, 0], w: self })],
    [`instance/${other}/foreign`, await signEntry(node.privateKey, { k: `instance/${other}/foreign`, v: '1', t: [now, 0], w: self })],
    [`instance/${other}/own`, await signEntry(peer.privateKey, { k: `instance/${other}/own`, v: '1', t: [now, 0], w: other })],
    [revocationKey(other), revocation],
    ['garbage', { not: 'an entry' }],
    ['corrupt', undefined]
  ]
  for (const [k, v] of raw) store.entries.set(k, v)
  await node.registry.start()
  t.teardown(async () => { await node.registry.stop() })
  t.same(node.registry.list('', { tombstones: true }).map(e => e.key).sort(), [`instance/${self}/ok`, revocationKey(other)].sort(), 'only the sound entries are restored')
  t.same([...store.entries.keys()].sort(), [`instance/${self}/ok`, revocationKey(other)].sort(), 'and the rest is deleted from disk')
  t.ok(node.trust.revoked.has(other), 'revocations on disk are enforced at load')
  const warn = log.lines.find(l => l.msg?.startsWith('registry healed at load'))
  t.same(warn?.reasons, { invalid: 4, future: 1, unauthorized: 1, revoked: 1 })
  const next = await node.registry.set(`instance/${self}/next`, 1)
  t.same(next.ts, [now + 10_001, 0], 'the clock resumed past its own maximum, carrying into the wall clock')
})
