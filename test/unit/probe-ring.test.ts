import t from 'tap'
import fc from 'fast-check'
import { ProbeRing } from '../../node/membership/ring.ts'
import { SwimFleet, FAST } from '../helpers/swim-fleet.ts'
import { waitFor } from '../helpers/cluster.ts'

// Who probes whom: each member probes its k ring successors, so every member
// must be probed by exactly min(k, n − 1) others whenever the members agree
// on who is in the fleet, whatever order they list it in.

const ids = fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 60 })

t.test('every member is probed by exactly min(k, n − 1) others, its predecessors', async t => {
  fc.assert(fc.property(ids, fc.integer({ min: 1, max: 8 }), (members, k) => {
    const ring = new ProbeRing()
    const probedBy = new Map<string, string[]>(members.map(id => [id, []]))
    for (const self of members) {
      const next = ring.successors(self, members, k)
      if (next.includes(self)) return false
      if (new Set(next).size !== next.length) return false
      if (next.length !== Math.min(k, members.length - 1)) return false
      for (const id of next) probedBy.get(id)!.push(self)
    }
    for (const [id, by] of probedBy) {
      if (by.length !== Math.min(k, members.length - 1)) return false
      if ([...by].sort().join() !== ring.predecessors(id, members, k).sort().join()) return false
    }
    return true
  }), { numRuns: 300 })
  t.pass('300 random fleets')
})

t.test('the ring does not depend on the order members are listed in', async t => {
  fc.assert(fc.property(ids, fc.integer({ min: 1, max: 8 }), fc.integer(), (members, k, seed) => {
    const shuffled = [...members].sort((a, b) => ((a.charCodeAt(0) * seed) % 7) - ((b.charCodeAt(0) * seed) % 7))
    const ring = new ProbeRing()
    return members.every(self => ring.successors(self, members, k).join() === ring.successors(self, shuffled, k).join())
  }), { numRuns: 300 })
  t.pass('300 random orders')
})

t.test('a member not in the list still finds its place', async t => {
  const ring = new ProbeRing()
  const others = ['a', 'b', 'c', 'd', 'e']
  const next = ring.successors('z', others, 2)
  t.equal(next.length, 2)
  t.notOk(next.includes('z'))
  t.same(ring.successors('z', [], 3), [], 'alone: nobody to probe')
  t.same(ring.successors('z', others, 0), [], 'k = 0: nobody')
})

t.test('with a ring of 2, each of 8 members probes only its successors, and a silent one is still found dead', async t => {
  const fleet = new SwimFleet()
  const init = { ...FAST, probeSuccessors: 2 }
  for (let i = 0; i < 8; i++) await fleet.add(`n${i}`, init)
  await fleet.introduce()
  for (const node of fleet.nodes) await node.membership.start()
  t.teardown(async () => { await fleet.stop() })
  const names = fleet.nodes.map(n => n.name)
  await waitFor(() => fleet.all(names, names, 'alive'), 'all alive everywhere', 10_000, 20)
  // a member probes each newcomer once, out of turn: let those first probes pass
  await waitFor(() => fleet.nodes.every(n => n.probes.length >= 10), 'ten probes by every member', 10_000, 20)
  // from now on, record whom each member pings directly (indirect probes carry `for`)
  const pinged = new Map<string, string[]>(fleet.nodes.map(n => [n.id, []]))
  for (const n of fleet.nodes) {
    const transport = fleet.net.nodes.get(n.id)!
    const request = transport.request.bind(transport)
    transport.request = async (peer, frame, timeoutMs) => {
      if (frame.t === 'ping' && frame.for == null) pinged.get(n.id)!.push(peer)
      return await request(peer, frame, timeoutMs)
    }
  }
  await waitFor(() => [...pinged.values()].every(list => list.length >= 24), '24 probes by every member', 20_000, 20)
  const all = fleet.nodes.map(n => n.id)
  const ring = new ProbeRing()
  for (const n of fleet.nodes) {
    const next = ring.successors(n.id, all, 2)
    const list = pinged.get(n.id)!
    const elsewhere = list.filter(id => !next.includes(id)).length
    // one probe in eight goes anywhere in the fleet (the survey)
    t.ok(elsewhere <= Math.ceil(list.length / 8) + 1, `${n.name}: ${list.length - elsewhere} of ${list.length} probes to its two ring successors, ${elsewhere} elsewhere`)
    t.ok(next.every(id => list.includes(id)), `${n.name} probed both its ring successors`)
  }
  // n3 stalls (SIGSTOP: no connection closes): only its ring predecessors probe it, and the fleet learns from them
  fleet.net.freeze(fleet.node('n3').id)
  const rest = names.filter(n => n !== 'n3')
  await waitFor(() => fleet.all(rest, ['n3'], 'dead'), 'n3 dead on every other member', 15_000, 20)
  t.pass('n3 dead everywhere')
})
