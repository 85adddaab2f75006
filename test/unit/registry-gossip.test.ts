import t from 'tap'
import fc from 'fast-check'
import { contentMessageId } from '../../node/mesh/libp2p.ts'
import { signEntry } from '../../node/registry/entry.ts'
import { deltaCodec, REGISTRY_TOPIC } from '../../protocols/registry/delta.ts'
import { DEFAULT_ZONE, topicFor } from '../../protocols/registry/zones.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

// Gossip messages are unsigned and deduplicated by content; these tests hold
// the validator to what the gossipsub signature used to guarantee.

async function trio (quota = { maxKeys: 4096, maxBytes: 4e6, entriesPerSec: 1e6, burst: 1e6 }): Promise<{ a: MemoryMember, b: MemoryMember, c: MemoryMember }> {
  const mesh = new MemoryMesh()
  const a = await mesh.add()
  const b = await mesh.add({ init: { quota } })
  const c = await mesh.add()
  await mesh.introduce()
  for (const m of [a, b, c]) await m.registry.start()
  t.teardown(async () => { for (const m of [a, b, c]) await m.registry.stop() })
  return { a, b, c }
}

const deliver = async (to: MemoryMember, via: MemoryMember, entries: WireEntry[]): Promise<string> =>
  await to.deliver({ type: 'unsigned', topic: topicFor(entries[0]?.k ?? '', DEFAULT_ZONE), data: deltaCodec.encode({ entries }) }, via.peerId)

async function writes (m: MemoryMember, n: number, from = 0): Promise<WireEntry[]> {
  const self = m.peerId.toString()
  return await Promise.all(Array.from({ length: n }, async (_, i) => await signEntry(m.privateKey, { k: `instance/${self}/e${from + i}`, v: String(from + i), t: [Date.now(), from + i], w: self })))
}

t.test('a message id covers every byte, so no forged copy shares the genuine message\'s id', async t => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (data, at, flip) => {
    const forged = Uint8Array.from(data)
    forged[at % data.length]! ^= flip
    const id = Buffer.from(contentMessageId({ topic: REGISTRY_TOPIC, data }))
    return id.equals(Buffer.from(contentMessageId({ topic: REGISTRY_TOPIC, data: Uint8Array.from(data) }))) &&
      !id.equals(Buffer.from(contentMessageId({ topic: REGISTRY_TOPIC, data: forged }))) &&
      !id.equals(Buffer.from(contentMessageId({ topic: `${REGISTRY_TOPIC}x`, data })))
  }), { numRuns: 2000 })
  t.pass('same bytes, same id; one byte changed, another id')
})

t.test('entries travel through relays; a delta is one writer\'s; signed gossip and stale deltas go no further', async t => {
  const { a, b, c } = await trio()
  const [e1, e2] = await writes(a, 2)
  t.equal(await deliver(b, c, [e1!]), 'accept', 'a relay forwards another writer\'s entry: its signature speaks for it')
  t.equal(await deliver(b, c, [e1!]), 'ignore', 'nothing newer than what we hold: not forwarded again')
  const [mine] = await writes(c, 1)
  t.equal(await deliver(b, c, [e2!, mine!]), 'reject', 'two writers in one delta')
  t.equal(b.registry.get(e2!.k), undefined)
  t.equal(await b.deliver({ type: 'signed', from: a.peerId, topic: REGISTRY_TOPIC, data: deltaCodec.encode({ entries: [e2!] }), sequenceNumber: 1n, signature: new Uint8Array(64), key: a.peerId.publicKey! }, a.peerId), 'reject', 'a gossipsub-signed message is not this topic\'s')
})

t.test('a forged copy carrying the genuine signature cannot make the genuine entry fail', async t => {
  const { a, b, c } = await trio()
  const [genuine] = await writes(a, 1)
  const forged: WireEntry = { ...genuine!, v: '"forged"' }
  const [forgedVerdict, genuineVerdict] = await Promise.all([deliver(b, c, [forged]), deliver(b, a, [genuine!])])
  t.equal(forgedVerdict, 'reject')
  t.equal(genuineVerdict, 'accept', 'checked on its own content, not on the forgery\'s result')
  t.equal(b.registry.get(genuine!.k)?.value, 0)
})

t.test('repackaged copies of a writer\'s entries are charged to its rate once', async t => {
  const { a, b, c } = await trio({ maxKeys: 4096, maxBytes: 4e6, entriesPerSec: 0.001, burst: 20 })
  const fresh = await writes(a, 10)
  // a relay repackages the same ten entries five ways, all arriving at once
  const verdicts = await Promise.all([
    deliver(b, a, fresh),
    deliver(b, c, [...fresh].reverse()),
    deliver(b, c, fresh.slice(0, 5)),
    deliver(b, c, fresh.slice(5)),
    deliver(b, c, fresh.filter((_, i) => i % 2 === 0))
  ])
  t.same(verdicts, ['accept', 'accept', 'accept', 'accept', 'accept'])
  t.equal(b.registry.list(`instance/${a.peerId.toString()}/`).length, 10)
  t.equal(await deliver(b, a, await writes(a, 10, 10)), 'accept', 'the writer still has the other half of its burst')
  t.equal(await deliver(b, a, await writes(a, 1, 20)), 'ignore', 'and no more')
})

t.test('entries forged in a writer\'s name do not spend its budget', async t => {
  const { a, b, c } = await trio({ maxKeys: 4096, maxBytes: 4e6, entriesPerSec: 0.001, burst: 10 })
  for (let round = 0; round < 3; round++) {
    const forged = (await writes(a, 10, 100 + round * 10)).map(e => ({ ...e, v: '"forged"' }))
    t.equal(await deliver(b, c, forged), 'reject')
  }
  t.equal(await deliver(b, a, await writes(a, 10)), 'accept', 'the genuine writer\'s whole burst is left')
})
