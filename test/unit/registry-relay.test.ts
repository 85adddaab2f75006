import t, { type Test } from 'tap'
import pino from 'pino'
import { signEntry } from '../../node/registry/entry.ts'
import { RELAY_MAX_DELAY_MS } from '../../node/registry/gossip.ts'
import { HealthRelay } from '../../node/registry/relay.ts'
import { deltaCodec } from '../../protocols/registry/delta.ts'
import { DEFAULT_ZONE, zoneTopic } from '../../protocols/registry/zones.ts'
import { RELAY_PROTOCOL, requestRelay } from '../../protocols/registry-relay/index.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'
import type { Message } from '@libp2p/gossipsub'

// A member's health goes to its zone's scheduler, which sends it with its next write to the zone.

interface Lab { s: MemoryMember, m: MemoryMember, o: MemoryMember, seen: WireEntry[][], leading: { yes: boolean } }

async function lab (t: Test, leaderOf: (lab: { s: MemoryMember }) => string | undefined = ({ s }) => s.peerId.toString()): Promise<Lab> {
  const mesh = new MemoryMesh()
  const s = await mesh.add({ role: 'server' })
  const m = await mesh.add()
  const o = await mesh.add()
  await mesh.introduce()
  for (const x of [s, m, o]) await x.registry.start()
  // every delta the observer receives, as its entries
  const seen: WireEntry[][] = []
  const deliver = o.deliver.bind(o)
  o.deliver = async (msg: Message, from) => {
    if (msg.type === 'unsigned') seen.push(deltaCodec.decode(msg.data).entries)
    return await deliver(msg, from)
  }
  const leading = { yes: true }
  const relays = [s, m, o].map(x => new HealthRelay({
    self: x.peerId.toString(),
    network: x.network,
    registry: x.registry,
    leader: () => leaderOf({ s }),
    isLeader: () => x === s && leading.yes,
    logger: pino({ level: 'silent' })
  }, { timeoutMs: 1000 }))
  for (const r of relays) await r.start()
  t.teardown(async () => {
    for (const r of relays) await r.stop()
    for (const x of [s, m, o]) await x.registry.stop()
  })
  return { s, m, o, seen, leading }
}

const until = async (what: string, ok: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

t.test('a member\'s health goes out with the scheduler\'s next write to the zone, in one delta', async t => {
  const { s, m, o, seen } = await lab(t)
  const key = `health/${m.peerId.toString()}`
  await m.registry.set(key, { cpuPct: 12 })
  await until('the scheduler holds the member\'s health', () => s.registry.get(key) != null)
  t.equal(seen.length, 0, 'the member gossiped nothing itself')
  t.equal(o.registry.get(key), undefined, 'nor has the scheduler sent it on alone yet')
  const renewal = `scheduler/${DEFAULT_ZONE}/${s.peerId.toString()}`
  await s.registry.set(renewal, { term: 1, leaseMs: 3000 })
  await until('the observer has both', () => o.registry.get(key) != null && o.registry.get(renewal) != null)
  t.equal(seen.length, 1, 'one delta')
  t.same(seen[0]!.map(e => e.k), [renewal, key], 'the renewal first, the relayed health after it')
  t.same(o.registry.value(key), { cpuPct: 12 }, 'the member\'s own signed value')
  t.equal(o.registry.get(key)!.writer, m.peerId.toString(), 'still the member\'s entry')
})

t.test('with no write of its own the scheduler sends what it relays within RELAY_MAX_DELAY_MS', async t => {
  const { m, o, seen } = await lab(t)
  const key = `health/${m.peerId.toString()}`
  const at = Date.now()
  await m.registry.set(key, { cpuPct: 1 })
  await until('the observer has it', () => o.registry.get(key) != null, RELAY_MAX_DELAY_MS + 4000)
  t.ok(Date.now() - at >= RELAY_MAX_DELAY_MS - 50, `held for the scheduler's next write (${Date.now() - at} ms)`)
  t.same(seen.map(d => d.map(e => e.k)), [[key]])
})

t.test('no scheduler, or one that refuses: the member gossips its health itself', async t => {
  const none = await lab(t, () => undefined)
  const key = `health/${none.m.peerId.toString()}`
  await none.m.registry.set(key, { cpuPct: 2 })
  await until('the observer has it', () => none.o.registry.get(key) != null, 1000)
  t.same(none.seen.map(d => d.map(e => e.k)), [[key]], 'gossiped by the member at once')

  const refusing = await lab(t)
  refusing.leading.yes = false
  const key2 = `health/${refusing.m.peerId.toString()}`
  await refusing.m.registry.set(key2, { cpuPct: 3 })
  await until('the observer has it', () => refusing.o.registry.get(key2) != null, 3000)
  t.equal(refusing.s.registry.get(key2)?.writer, refusing.m.peerId.toString(), 'the scheduler got it by gossip too')
  t.same(refusing.seen.map(d => d.map(e => e.k)), [[key2]], 'one delta, the member\'s own')

  const gone = await lab(t, () => 'not-a-peer-id')
  const key3 = `health/${gone.m.peerId.toString()}`
  await gone.m.registry.set(key3, { cpuPct: 4 })
  await until('the observer has it', () => gone.o.registry.get(key3) != null, 3000)
  t.pass('a scheduler that cannot be reached: gossiped')
})

t.test('a scheduler relays only a member\'s own health, in its zone', async t => {
  const { s, m, o } = await lab(t)
  const ask = async (from: MemoryMember, entries: WireEntry[]): Promise<string> => {
    const stream = await from.network.dialProtocol(s.peerId, RELAY_PROTOCOL)
    try {
      await requestRelay(stream, entries)
      return 'ok'
    } catch (err: any) {
      return err.remoteCode ?? err.code
    }
  }
  const mine = await signEntry(m.privateKey, { k: `health/${m.peerId.toString()}`, v: '{"cpuPct":5}', t: [Date.now(), 0], w: m.peerId.toString() })
  t.equal(await ask(o, [mine]), 'ERR_NOT_RELAYED', 'another member\'s entry, sent by someone else')
  const instance = await signEntry(o.privateKey, { k: `instance/${o.peerId.toString()}/x`, v: '{"state":"running"}', t: [Date.now(), 0], w: o.peerId.toString() })
  t.equal(await ask(o, [instance]), 'ERR_NOT_RELAYED', 'not health')
  t.equal(s.registry.get(instance.k), undefined)
  const forged = { ...mine, v: '{"cpuPct":99}' }
  t.equal(await ask(m, [forged]), 'ERR_BAD_ENTRY_SIGNATURE', 'a value its signature does not cover')
  t.equal(s.registry.get(mine.k), undefined, 'nothing stored')
  t.equal(await ask(m, [mine]), 'ok', 'the member\'s own, signed')
  t.same(s.registry.value(mine.k), { cpuPct: 5 })
})

t.test('a renewal carrying health of a writer the receiver cannot check yet is taken without that entry', async t => {
  const mesh = new MemoryMesh()
  const s = await mesh.add({ role: 'server' })
  const o = await mesh.add()
  const stranger = await mesh.add()
  // the observer knows the scheduler, not the stranger
  await o.trust.learnCertificate(s.cert, s.peerId.toString())
  await s.trust.learnCertificate(o.cert, o.peerId.toString())
  await o.registry.start()
  t.teardown(async () => { await o.registry.stop() })
  const ts = Date.now()
  const renewal = await signEntry(s.privateKey, { k: `scheduler/${DEFAULT_ZONE}/${s.peerId.toString()}`, v: '{"term":1}', t: [ts, 0], w: s.peerId.toString() })
  const health = await signEntry(stranger.privateKey, { k: `health/${stranger.peerId.toString()}`, v: '{"cpuPct":1}', t: [ts, 0], w: stranger.peerId.toString() })
  const verdict = await o.deliver({ type: 'unsigned', topic: zoneTopic(DEFAULT_ZONE), data: deltaCodec.encode({ entries: [renewal, health] }) }, s.peerId)
  t.equal(verdict, 'accept')
  t.equal(o.registry.get(renewal.k)?.writer, s.peerId.toString(), 'the renewal is taken')
  t.equal(o.registry.get(health.k), undefined, 'the unknown writer\'s entry is left out (anti-entropy brings it with its certificate)')
  const other = await signEntry(stranger.privateKey, { k: `scheduler/${DEFAULT_ZONE}/${stranger.peerId.toString()}`, v: '{"term":2}', t: [ts, 1], w: stranger.peerId.toString() })
  const renewal2 = await signEntry(s.privateKey, { k: renewal.k, v: '{"term":1}', t: [ts, 2], w: s.peerId.toString() })
  t.equal(await o.deliver({ type: 'unsigned', topic: zoneTopic(DEFAULT_ZONE), data: deltaCodec.encode({ entries: [renewal2, other] }) }, s.peerId), 'reject', 'only health may come from other writers than the delta\'s own')
})
