import t, { type Test } from 'tap'
import { waitFor, sleep } from '../helpers/cluster.ts'
import { SwimFleet, FAST } from '../helpers/swim-fleet.ts'
import { signAccusation, signAlive, signRelayedAck } from '../../node/membership/records.ts'

// Memberships over a simulated network: real SWIM logic, real signatures, real
// codecs, fast timings (probe every 100 ms). The multi-process tests run libp2p.

async function fleetOf (t: Test, n: number, init = FAST): Promise<SwimFleet> {
  const fleet = new SwimFleet()
  for (let i = 0; i < n; i++) await fleet.add(`n${i}`, init)
  await fleet.introduce()
  for (const node of fleet.nodes) await node.membership.start()
  t.teardown(async () => { await fleet.stop() })
  return fleet
}

const names = (fleet: SwimFleet): string[] => fleet.nodes.map(n => n.name)

t.test('members find each other and agree everyone is alive', async t => {
  const fleet = await fleetOf(t, 6)
  await waitFor(() => fleet.all(names(fleet), names(fleet), 'alive'), 'all alive everywhere', 10_000, 20)
  // offsets come from probes, one member per interval
  await waitFor(() => fleet.node('n0').membership.members().every(m => m.clockOffsetMs != null), 'n0 to measure every clock', 10_000, 50)
  const members = fleet.node('n0').membership.members()
  t.equal(members.length, 6, 'n0 lists six members, itself included')
  t.ok(members.every(m => m.role === 'gateway'), 'roles come from the certificates')
  t.ok(members.filter(m => !m.self).every(m => typeof m.incarnation === 'number'), 'each has an incarnation')
  // every member shares this machine's clock, so an offset is only the probes'
  // error: at most half a sample's round trip, and samples over 1000 ms are
  // dropped. A unit or sign error would be off by far more than 500 ms.
  const others = members.filter(m => !m.self)
  t.ok(others.every(m => m.clockOffsetMs != null && Math.abs(m.clockOffsetMs) <= 500), `clock offsets were measured and are small: ${others.map(m => m.clockOffsetMs).join(', ')} ms`)
  t.ok(others.every(m => m.clockSkewed !== true), 'and no member is taken for skewed')
  // the list is rebuilt after a second; a member whose facts did not change is the same object,
  // and what changes by itself (last seen) is read when read
  const seen = others.map(m => m.lastSeenMs)
  await sleep(1200)
  const again = fleet.node('n0').membership.members()
  const unchanged = again.filter(m => { const before = members.find(b => b.peerId === m.peerId); return before != null && before.state === m.state && before.incarnation === m.incarnation })
  t.ok(unchanged.length >= 2, `most members unchanged a second later (${unchanged.length})`)
  t.ok(unchanged.every(m => members.includes(m)), 'an unchanged member is the same object in the new list')
  t.not(others.map(m => m.lastSeenMs).join(), seen.join(), 'and its last-seen time moved on by itself')
})

t.test('a killed member is declared dead by all, and nobody else is', async t => {
  const fleet = await fleetOf(t, 6)
  await waitFor(() => fleet.all(names(fleet), names(fleet), 'alive'), 'all alive', 10_000, 20)
  const victim = fleet.node('n3')
  const events: string[] = []
  fleet.node('n0').membership.addEventListener('member:state', evt => { if (evt.detail.peerId === victim.id) events.push(evt.detail.state) })
  const t0 = performance.now()
  fleet.net.kill(victim.id)
  await victim.membership.stop()
  const survivors = names(fleet).filter(n => n !== 'n3')
  await waitFor(() => survivors.every(o => fleet.state(o, 'n3') === 'dead'), 'n3 dead on every survivor', 10_000, 10)
  t.pass(`dead everywhere after ${Math.round(performance.now() - t0)} ms`)
  t.ok(fleet.all(survivors, survivors, 'alive'), 'the survivors still see each other alive')
  t.same(events.slice(-2), ['suspect', 'dead'], 'n0 went through suspect to dead')
})

t.test('a member that stalls is declared dead, then refutes and comes back with a higher incarnation', async t => {
  const fleet = await fleetOf(t, 5)
  const all = names(fleet)
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive', 10_000, 20)
  const before = fleet.node('n0').membership.members().find(m => m.peerId === fleet.node('n2').id)!.incarnation!
  const flips: boolean[] = []
  fleet.node('n2').membership.addEventListener('health:local', evt => { flips.push(evt.detail.healthy) })
  fleet.net.freeze(fleet.node('n2').id)
  const others = all.filter(n => n !== 'n2')
  await waitFor(() => others.every(o => fleet.state(o, 'n2') === 'dead'), 'n2 dead while frozen', 15_000, 20)
  fleet.net.thaw(fleet.node('n2').id)
  await waitFor(() => others.every(o => fleet.state(o, 'n2') === 'alive'), 'n2 alive again after it refutes', 15_000, 20)
  const after = fleet.node('n0').membership.members().find(m => m.peerId === fleet.node('n2').id)!.incarnation!
  t.ok(after > before, `incarnation went up (${before} → ${after})`)
  t.equal(flips[0], false, 'cut off, n2 doubted itself (health:local, healthy false)')
  await waitFor(() => fleet.node('n2').membership.localHealth().healthy, 'n2 to trust itself again', 15_000, 20)
  t.equal(flips.at(-1), true, 'and said so when it recovered')
})

t.test('a partition splits the view and healing joins it again', async t => {
  const fleet = await fleetOf(t, 5)
  const all = names(fleet)
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive', 10_000, 20)
  const a = ['n0', 'n1', 'n2']
  const b = ['n3', 'n4']
  fleet.net.partition(a.map(n => fleet.node(n).id), b.map(n => fleet.node(n).id))
  await waitFor(() => fleet.all(a, b, 'dead') && fleet.all(b, a, 'dead'), 'each side holds the other dead', 20_000, 20)
  t.ok(fleet.all(a, a, 'alive') && fleet.all(b, b, 'alive'), 'each side still sees itself alive')
  fleet.net.heal()
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive after healing', 20_000, 20)
  t.pass('healed')
})

t.test('a member list is rebuilt when what it shows changes, not only when it is old', async t => {
  const fleet = await fleetOf(t, 4)
  const all = names(fleet)
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive', 10_000, 20)
  const [n0, n1, n2] = [fleet.node('n0'), fleet.node('n1'), fleet.node('n2')]
  const first = n0.membership.members()
  const listed = first.find(m => m.peerId === n2.id)!
  t.equal(n0.membership.members().find(m => m.peerId === n2.id), listed, 'nothing changed: the same member object')
  // n2's own alive claim, one incarnation up (as after a refutation): alive before and after, so no state event
  const higher = await signAlive(n2.privateKey, n2.id, listed.incarnation! + 1, [`/ip4/127.0.0.1/tcp/${4002}`])
  fleet.net.nodes.get(n1.id)!.gossip(n0.id, { t: 'gossip', g: [higher] })
  await waitFor(() => n0.membership.stateOf(n2.id) === 'alive' && n0.membership.members().find(m => m.peerId === n2.id)!.incarnation === listed.incarnation! + 1, 'the new incarnation listed', 500, 5)
  t.pass(`listed at once (the list may be kept ${5} s while nothing changes)`)
})

t.test('records nobody signed are refused', async t => {
  const fleet = await fleetOf(t, 5)
  const all = names(fleet)
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive', 10_000, 20)
  const [n0, n1, n2] = [fleet.node('n0'), fleet.node('n1'), fleet.node('n2')]
  // n1 claims on n2's behalf: a higher incarnation, signed by n1
  const forged = await signAlive(n1.privateKey, n2.id, 2 ** 40, [])
  fleet.net.nodes.get(n1.id)!.gossip(n0.id, { t: 'gossip', g: [forged] })
  // n1 accuses n2 but signs as if it were n3
  const current = n0.membership.members().find(m => m.peerId === n2.id)!
  const alive = await signAlive(n2.privateKey, n2.id, current.incarnation!, [`/ip4/127.0.0.1/tcp/${4002}`])
  const fake = await signAccusation(n1.privateKey, 'd', n2.id, current.incarnation!, fleet.node('n3').id)
  fleet.net.nodes.get(n1.id)!.gossip(n0.id, { t: 'gossip', g: [{ ...alive, acc: fake }] })
  await sleep(300)
  const now = n0.membership.members().find(m => m.peerId === n2.id)!
  t.equal(now.state, 'alive', 'n2 is still alive on n0')
  t.equal(now.incarnation, current.incarnation, 'its incarnation did not move')
  t.equal(n0.rejected.filter(c => c === 'ERR_BAD_MEMBER_RECORD').length, 2, 'both forgeries were counted')
})

t.test('an accusation the accused hears is refuted before anyone declares it dead', async t => {
  const fleet = await fleetOf(t, 5)
  const all = names(fleet)
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive', 10_000, 20)
  const [n0, n1] = [fleet.node('n0'), fleet.node('n1')]
  const deaths: string[] = []
  for (const n of fleet.nodes) n.membership.addEventListener('member:state', evt => { if (evt.detail.peerId === n1.id && evt.detail.state === 'dead') deaths.push(n.name) })
  const inc = n0.membership.members().find(m => m.peerId === n1.id)!.incarnation!
  const alive = await signAlive(n1.privateKey, n1.id, inc, [`/ip4/127.0.0.1/tcp/${4001}`])
  // n0 falsely suspects n1 and tells n2
  fleet.net.nodes.get(n0.id)!.gossip(fleet.node('n2').id, { t: 'gossip', g: [{ ...alive, acc: await signAccusation(n0.privateKey, 's', n1.id, inc, n0.id) }] })
  await waitFor(() => (fleet.node('n2').membership.members().find(m => m.peerId === n1.id)!.incarnation ?? 0) > inc, 'n1 to refute with a higher incarnation', 5000, 10)
  await sleep(1000)
  t.same(deaths, [], 'nobody declared n1 dead')
  t.ok(fleet.all(all, all, 'alive'), 'all alive')
})

t.test('a relay cannot vouch for a dead member: acks it forwards must carry the target\'s signature', async t => {
  const fleet = new SwimFleet()
  await fleet.add('n0', { ...FAST, indirectChecks: 2 })
  await fleet.add('n3', FAST)
  // two members that answer probes honestly but every indirect probe with an ack they made up
  for (const liar of ['l1', 'l2']) {
    await fleet.addStub(liar, async ({ id, privateKey }) => {
      const alive = await signAlive(privateKey, id, 1, [])
      return {
        onRequest: async (_from, f) => f.t === 'ping'
          ? { t: 'ack', re: f.seq, now: Date.now(), g: [alive], ...(f.for == null ? {} : { sig: await signRelayedAck(privateKey, f.for.id, f.for.n, id) }) }
          : { t: 'ack', re: f.seq, now: Date.now(), sig: 'A'.repeat(86) },
        onGossip: () => {},
        records: () => [alive],
        onPushPull: () => {},
        onConnected: () => {},
        onDisconnected: () => {},
        onInvalid: () => {}
      }
    })
  }
  await fleet.introduce()
  for (const node of fleet.nodes) await node.membership.start()
  t.teardown(async () => { await fleet.stop() })
  const n0 = fleet.node('n0')
  await waitFor(() => n0.membership.members().filter(m => m.state === 'alive').length === 4, 'n0 to see all four alive', 10_000, 20)
  fleet.net.freeze(fleet.node('n3').id)
  await waitFor(() => fleet.state('n0', 'n3') === 'dead', 'n0 to declare the frozen n3 dead anyway', 15_000, 20)
  t.ok(n0.rejected.includes('ERR_FORGED_ACK'), 'the liars\' acks were refused and counted')
  t.notOk(n0.probes.includes('indirect'), 'no forged ack was taken for an answer')
})

t.test('a revoked member drops out; a member that leaves is dead at once', async t => {
  const fleet = await fleetOf(t, 4)
  const all = names(fleet)
  await waitFor(() => fleet.all(all, all, 'alive'), 'all alive', 10_000, 20)
  const n3 = fleet.node('n3')
  for (const n of fleet.nodes) n.trust.denied.add(n3.id)
  await waitFor(() => fleet.nodes.slice(0, 3).every(n => n.membership.members().every(m => m.peerId !== n3.id)), 'n3 gone from every list', 5000, 20)
  t.equal(fleet.state('n0', 'n3'), 'dead', 'and dead to anyone who asks')
  const n2 = fleet.node('n2')
  // a leave is news of death straight from n2: no observer suspects it first
  const seen: Record<string, string[]> = { n0: [], n1: [] }
  for (const o of ['n0', 'n1']) {
    fleet.node(o).membership.addEventListener('member:state', e => { if (e.detail.peerId === n2.id) seen[o]!.push(e.detail.state) })
  }
  await n2.membership.stop()
  await waitFor(() => ['n0', 'n1'].every(o => fleet.state(o, 'n2') === 'dead'), 'n2 dead after leaving', 30_000, 10)
  t.same(seen, { n0: ['dead'], n1: ['dead'] }, 'n0 and n1 went from alive to dead, without a suspicion on the way')
})

t.test('cost per member stays flat as the fleet grows', async t => {
  // slower probing, so 32 members in one event loop still keep up
  const init = { ...FAST, probeIntervalMs: 500, probeTimeoutMs: 250, pushPullIntervalMs: 60_000 }
  const rate = async (n: number): Promise<number> => {
    const fleet = new SwimFleet()
    for (let i = 0; i < n; i++) await fleet.add(`m${i}`, init)
    await fleet.introduce()
    for (const node of fleet.nodes) await node.membership.start()
    try {
      await waitFor(() => fleet.all(names(fleet), names(fleet), 'alive'), `${n} alive`, 20_000, 50)
      await sleep(3000) // let joining news finish spreading
      fleet.net.sent.clear()
      await sleep(4000)
      const frames = [...fleet.net.sent.values()].reduce((s, v) => s + v.frames, 0)
      return frames / n / 4
    } finally {
      await fleet.stop()
    }
  }
  const small = await rate(8)
  const large = await rate(32)
  t.comment(`frames per member per second: ${small.toFixed(1)} at N=8, ${large.toFixed(1)} at N=32`)
  t.ok(large < small * 1.5, 'does not grow with N')
})

t.test('a joining member learns the fleet by push-pull without gossiping it all back', async t => {
  const fleet = await fleetOf(t, 16)
  await waitFor(() => fleet.all(names(fleet), names(fleet), 'alive'), 'all alive everywhere', 20_000, 20)
  await sleep(1000) // joining news finishes spreading
  const late = await fleet.add('late')
  await fleet.introduce()
  // every record about another member that the newcomer puts on a gossip frame
  let relayed = 0
  const transport = fleet.net.nodes.get(late.id)!
  const gossip = transport.gossip.bind(transport)
  transport.gossip = (peer, frame) => {
    relayed += frame.g.filter(r => r.id !== late.id && r.acc == null).length
    gossip(peer, frame)
  }
  await late.membership.start()
  await waitFor(() => fleet.all(['late'], names(fleet), 'alive'), 'late to see all 16 alive', 20_000, 20)
  await waitFor(() => fleet.all(names(fleet), ['late'], 'alive'), 'all 16 to see late alive', 20_000, 20)
  await sleep(2000)
  // each of the 16 alive claims, queued as news, would go out ~4 · log10(18) = 8 times
  t.ok(relayed < 16, `the newcomer relayed ${relayed} alive claims of others (it learnt 16 by push-pull)`)
})
