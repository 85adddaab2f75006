import t from 'tap'
import { signEntry } from '../../node/registry/entry.ts'
import { MemoryRegistryStore } from '../../node/registry/store.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { DEFAULT_ZONE, isZoneLocal, topicFor, zoneOf, zoneOfTopic, zoneSummaryKey, zoneTopic } from '../../protocols/registry/zones.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import type { RegistryMetrics } from '../../node/registry/registry.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

// Zones bound the registry's work: health/, instance/ and scheduler/ stay in
// their writer's zone (by certificate), everything else is fleet-wide.

function counting (): { metrics: RegistryMetrics, reasons: string[] } {
  const reasons: string[] = []
  return { reasons, metrics: { rejected: r => { reasons.push(r) }, gossipIn () {}, gossipOut () {}, synced () {} } }
}

interface Fleet { mesh: MemoryMesh, a1: MemoryMember, a2: MemoryMember, b1: MemoryMember, coord: MemoryMember, counts: Map<MemoryMember, string[]> }

/** Two agents in zone a, one in zone b, a coordinator; every node record written (so the coordinator learns the zones). */
async function fleet (options: { gossip?: boolean } = {}): Promise<Fleet> {
  const mesh = new MemoryMesh()
  const counts = new Map<MemoryMember, string[]>()
  const add = async (labels: Record<string, string>, role?: 'coordinator'): Promise<MemoryMember> => {
    const c = counting()
    const m = await mesh.add({ labels, ...(role == null ? {} : { role }), components: { metrics: c.metrics } })
    counts.set(m, c.reasons)
    return m
  }
  const a1 = await add({ zone: 'a' })
  const a2 = await add({ zone: 'a' })
  const b1 = await add({ zone: 'b' })
  const coord = await add({}, 'coordinator')
  await mesh.introduce()
  for (const m of mesh.members) await m.registry.start()
  t.teardown(async () => { for (const m of mesh.members) await m.registry.stop() })
  for (const m of mesh.members) await m.registry.set(`node/${m.peerId.toString()}`, { role: 'gateway', cert: m.cert })
  await settle()
  mesh.gossip = options.gossip ?? true
  return { mesh, a1, a2, b1, coord, counts }
}

const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }

const deliver = async (to: MemoryMember, via: MemoryMember, topic: string, entries: WireEntry[]): Promise<string> =>
  await to.deliver({ type: 'unsigned', topic, data: deltaCodec.encode({ entries }) }, via.peerId)

const sign = async (m: MemoryMember, k: string, v: unknown, at = Date.now()): Promise<WireEntry> =>
  await signEntry(m.privateKey, { k, v: JSON.stringify(v), t: [at, 0], w: m.peerId.toString() })

t.test('which keys are zone-local, and the topic each travels on', async t => {
  for (const k of ['health/P', 'instance/P/model', 'scheduler/a/P']) t.ok(isZoneLocal(k), `${k} is zone-local`)
  for (const k of ['node/P', 'placement/d/P', 'bundle/x/P', 'release/P', 'deployment/d', 'revoked/P', 'rollout/r', 'zone/a/P', 'healthy/P']) {
    t.notOk(isZoneLocal(k), `${k} is fleet-wide`)
    t.equal(topicFor(k, 'a'), REGISTRY_TOPIC)
  }
  t.equal(topicFor('health/P', 'a'), zoneTopic('a'))
  t.equal(topicFor('scheduler/a/P', 'a'), zoneTopic('a'), 'a scheduler lease travels on its zone\'s topic')
  t.equal(zoneOfTopic(zoneTopic('north-1')), 'north-1')
  t.equal(zoneOfTopic(REGISTRY_TOPIC), undefined)
  t.equal(zoneOfTopic(zoneTopic('')), undefined, 'an empty zone is no zone')
  t.equal(zoneOf({}), DEFAULT_ZONE)
  t.equal(zoneSummaryKey('a', 'P'), 'zone/a/P')
})

t.test('gossip: zone-local entries reach their zone and the coordinator only; fleet-wide ones reach everyone', async t => {
  const { a1, a2, b1, coord } = await fleet()
  const self = a1.peerId.toString()
  t.same(a1.registry.zones(), { zone: 'a', followsAll: false, following: ['a'] })
  t.same(coord.registry.zones().following, ['a', 'b', DEFAULT_ZONE], 'the coordinator follows every zone it knows of')
  t.equal(coord.registry.zones().followsAll, true)
  await a1.registry.set(`health/${self}`, { cpuPct: 12 })
  await a1.registry.set(`instance/${self}/anomaly`, { state: 'running' })
  await a1.registry.set(`bundle/abc/${self}`, { size: 1 })
  await settle()
  for (const m of [a2, coord]) {
    t.same(m.registry.value(`health/${self}`), { cpuPct: 12 }, 'health reached the zone and the coordinator')
    t.same(m.registry.value(`instance/${self}/anomaly`), { state: 'running' })
  }
  t.equal(b1.registry.get(`health/${self}`), undefined, 'zone b holds none of zone a\'s health')
  t.equal(b1.registry.get(`instance/${self}/anomaly`), undefined, 'nor its instances')
  for (const m of [a2, b1, coord]) t.same(m.registry.value(`bundle/abc/${self}`), { size: 1 }, 'a fleet-wide entry reached everyone')
})

t.test('an entry on the wrong topic, or for a zone its writer\'s certificate does not give it, is refused and counted', async t => {
  const { a1, a2, b1, coord, counts } = await fleet({ gossip: false })
  const a = a1.peerId.toString()
  const health = await sign(a1, `health/${a}`, { cpuPct: 1 })
  t.equal(await deliver(a2, a1, REGISTRY_TOPIC, [health]), 'reject', 'health on the fleet topic')
  t.ok(counts.get(a2)!.includes('ERR_WRONG_TOPIC'), 'counted as ERR_WRONG_TOPIC')
  const advert = await sign(a1, `bundle/abc/${a}`, { size: 1 })
  t.equal(await deliver(a2, a1, zoneTopic('a'), [advert]), 'reject', 'a fleet-wide entry on a zone topic')
  t.equal(await deliver(a2, a1, zoneTopic('a'), [health, advert]), 'reject', 'mixed in one delta')

  // b1's certificate says zone b: its health on zone a's topic is refused, whoever relays it
  const bHealth = await sign(b1, `health/${b1.peerId.toString()}`, { cpuPct: 2 })
  t.equal(await deliver(a2, a1, zoneTopic('a'), [bHealth]), 'reject', 'zone b\'s entry on zone a\'s topic')
  t.ok(counts.get(a2)!.includes('ERR_WRONG_ZONE'), 'counted as ERR_WRONG_ZONE')
  t.equal(await deliver(coord, a1, zoneTopic('a'), [bHealth]), 'reject', 'the coordinator refuses it too')
  t.equal(a2.registry.get(bHealth.k), undefined)
  t.equal(coord.registry.get(bHealth.k), undefined)

  t.equal(await deliver(b1, a1, zoneTopic('a'), [health]), 'ignore', 'a zone b node does not follow zone a\'s topic')
  t.equal(b1.registry.get(health.k), undefined)
  t.equal(await deliver(a2, a1, zoneTopic('a'), [health]), 'accept', 'the right topic')
  t.equal(await deliver(coord, a2, zoneTopic('a'), [health]), 'accept')
  t.equal(await deliver(coord, b1, zoneTopic('b'), [bHealth]), 'accept', 'the coordinator follows zone b as well')

  // a zone's summary must name its writer's own zone, on every path in
  await t.rejects(a1.registry.set(zoneSummaryKey('b', a), { members: {} }), { code: 'ERR_WRONG_ZONE' }, 'a node of zone a cannot write zone b\'s summary')
  const forged = await sign(a1, zoneSummaryKey('b', a), { members: {} })
  t.equal(await deliver(b1, a1, REGISTRY_TOPIC, [forged]), 'reject', 'nor gossip one')
  t.same(await b1.registry.merge([forged]), { applied: 0, rejected: 1 }, 'nor sync one')
  await a1.registry.set(zoneSummaryKey('a', a), { members: {} })
  t.ok(a1.registry.get(zoneSummaryKey('a', a)) != null, 'its own zone\'s summary is fine')

  // a scheduler claim (or endorsement) must be in its writer's own zone, and travels on that zone's topic
  const claim = { term: 1, leaseMs: 3000, since: 1 }
  await t.rejects(a1.registry.set(`scheduler/b/${a}`, claim), { code: 'ERR_WRONG_ZONE' }, 'a node of zone a cannot claim zone b')
  const forgedClaim = await sign(a1, `scheduler/b/${a}`, claim)
  t.equal(await deliver(coord, a1, zoneTopic('a'), [forgedClaim]), 'reject', 'nor gossip a claim on zone b')
  t.same(await coord.registry.merge([forgedClaim]), { applied: 0, rejected: 1 }, 'nor sync one')
  const lease = await sign(a1, `scheduler/a/${a}`, claim)
  t.equal(await deliver(a2, a1, REGISTRY_TOPIC, [lease]), 'reject', 'a lease on the fleet topic')
  t.equal(await deliver(b1, a1, zoneTopic('a'), [lease]), 'ignore', 'zone b does not follow zone a\'s leases')
  t.equal(await deliver(a2, a1, zoneTopic('a'), [lease]), 'accept', 'its zone takes it')
  t.equal(await deliver(coord, a1, zoneTopic('a'), [lease]), 'accept', 'and the coordinator')
})

t.test('anti-entropy between zones exchanges only fleet-wide entries; within a zone and with the coordinator, the zone\'s too', async t => {
  const { mesh, a1, a2, b1, coord, counts } = await fleet({ gossip: false })
  const [a, b] = [a1.peerId.toString(), b1.peerId.toString()]
  await a1.registry.set(`health/${a}`, { cpuPct: 1 })
  await a1.registry.set(`instance/${a}/m`, { state: 'running' })
  await a1.registry.set(`bundle/abc/${a}`, { size: 1 })
  await b1.registry.set(`health/${b}`, { cpuPct: 2 })
  await b1.registry.set(`instance/${b}/m`, { state: 'starting' })
  await b1.registry.set(`bundle/def/${b}`, { size: 2 })
  // the node records first, everywhere (they are fleet-wide)
  for (const m of mesh.members) for (const o of mesh.members) if (m !== o) await m.registry.syncWith(o.peerId)

  t.same(b1.registry.value(`bundle/abc/${a}`), { size: 1 }, 'fleet-wide entries cross zones')
  t.same(a1.registry.value(`bundle/def/${b}`), { size: 2 })
  t.equal(b1.registry.get(`health/${a}`), undefined, 'zone a\'s health never reached zone b')
  t.equal(b1.registry.get(`instance/${a}/m`), undefined)
  t.equal(a1.registry.get(`instance/${b}/m`), undefined, 'nor zone b\'s zone a')
  t.equal(a2.registry.get(`instance/${b}/m`), undefined)
  // (health is left out of the digests: it travels by gossip, and in buckets that differ anyway)
  t.same(a2.registry.value(`instance/${a}/m`), { state: 'running' }, 'within the zone it travels')
  t.same(coord.registry.value(`instance/${a}/m`), { state: 'running' }, 'the coordinator has zone a\'s')
  t.same(coord.registry.value(`instance/${b}/m`), { state: 'starting' }, 'and zone b\'s')
  t.same(await a1.registry.syncWith(b1.peerId), { differing: 0, received: 0, sent: 0 }, 'two zones in agreement: nothing to ship, the digests cover the same keys')
  t.equal((await coord.registry.syncWith(b1.peerId)).differing, 0, 'nor between the coordinator and an agent')

  // a peer that sends another zone's entries anyway is refused and counted
  const stolen = [...a2.registry.wireEntries()].filter(e => e.k === `instance/${a}/m`)
  t.same(await b1.registry.merge(stolen), { applied: 0, rejected: 1 }, 'zone a\'s instance offered to zone b')
  t.ok(counts.get(b1)!.includes('ERR_OUT_OF_ZONE'), 'counted as ERR_OUT_OF_ZONE')
})

t.test('a node drops zone-local entries of zones it does not follow (kept from before zones)', async t => {
  const { mesh, a1 } = await fleet({ gossip: false })
  const stale = await sign(a1, `health/${a1.peerId.toString()}`, { cpuPct: 3 })
  // as if anti-entropy of an older version had brought it
  const store = new MemoryRegistryStore()
  store.entries.set(stale.k, stale)
  const b2 = await mesh.add({ labels: { zone: 'b' }, store })
  await mesh.introduce()
  await b2.registry.start()
  t.teardown(async () => { await b2.registry.stop() })
  t.equal(b2.registry.get(stale.k), undefined, 'zone a\'s health is not kept in zone b')
  await settle()
  t.notOk(store.entries.has(stale.k), 'nor on disk')
})
