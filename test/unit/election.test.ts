import t from 'tap'
import { pino } from 'pino'
import { Election, type ElectionInit } from '../../node/scheduler/election.ts'
import { MAX_TERM } from '../../node/scheduler/lease.ts'
import { winningPlacement } from '../../node/scheduler/placements.ts'
import { MemoryTermStore } from '../../node/scheduler/terms.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import { sleep } from '../helpers/cluster.ts'
import { FakeMembership } from '../helpers/fake-membership.ts'

interface Node {
  member: MemoryMember
  id: string
  clock: { now: number }
  view: FakeMembership
  election: Election
  store: MemoryTermStore
  /** the schedulers it followed, in order */
  seen: string[]
  healthy: boolean
}

const LEASE = 2000
const quiet = pino({ level: process.env.LOG ?? 'silent' })

async function settle (): Promise<void> {
  for (let i = 0; i < 6; i++) await sleep(2)
}

/** A zone of agents with real registries gossiping in memory; each node's monotonic clock is its own. */
async function zone (roles: Array<'server' | 'gateway' | 'coordinator'>, options: { rogues?: number, before?: (nodes: Node[], mesh: MemoryMesh) => void, init?: ElectionInit } = {}) {
  const mesh = new MemoryMesh()
  const members: MemoryMember[] = []
  for (let i = 0; i < roles.length + (options.rogues ?? 0); i++) members.push(await mesh.add())
  await mesh.introduce()
  for (const m of members) await m.registry.start()
  const roster = members.map((m, i) => ({ id: m.peerId.toString(), role: roles[i] ?? 'gateway' as const }))
  const nodes: Node[] = []
  for (const [i, member] of members.slice(0, roles.length).entries()) {
    const id = member.peerId.toString()
    const clock = { now: 1_000_000 }
    const view = new FakeMembership(id, () => roster)
    const store = new MemoryTermStore()
    const health = { healthy: true }
    const election = new Election({
      peerId: member.peerId, registry: member.registry, membership: view, logger: quiet, store,
      monotonic: () => clock.now, localHealth: () => ({ healthy: node.healthy })
    }, { eligible: roles[i] !== 'coordinator', checkIntervalMs: 250, settleMs: 0, leaseMs: LEASE, renewIntervalMs: 500, ...options.init })
    const node: Node = { member, id, clock, view, store, election, seen: [], ...health }
    node.election.addEventListener('leader:change', evt => {
      const l = evt.detail.leader?.peerId
      if (evt.detail.zone === 'default' && l != null && node.seen.at(-1) !== l) node.seen.push(l)
    })
    nodes.push(node)
  }
  options.before?.(nodes, mesh)
  for (const n of nodes) await n.election.start()
  t.teardown(async () => {
    for (const n of nodes) await n.election.stop()
    for (const m of members) await m.registry.stop()
  })
  /** Advance the given nodes' clocks in 100 ms steps, ticking them, with gossip settling between. */
  const run = async (ms: number, who: Node[] = nodes): Promise<void> => {
    for (let done = 0; done < ms; done += 100) {
      for (const n of who) { n.clock.now += 100; n.election.tick() }
      await settle()
    }
  }
  const rogues = members.slice(roles.length)
  return { mesh, nodes, rogues, roster, run }
}

const leaders = (nodes: Node[]): string[] => nodes.filter(n => n.election.isLeader()).map(n => n.id)
const leaderSeenBy = (n: Node): string | undefined => n.election.leaderOf('default')?.peerId
const byRank = (nodes: Node[], roles: Map<string, string>): Node[] => [...nodes].sort((a, b) => {
  const ra = `${roles.get(a.id) === 'server' ? 0 : 1}:${a.id}`
  const rb = `${roles.get(b.id) === 'server' ? 0 : 1}:${b.id}`
  return ra < rb ? -1 : 1
})

t.test('the best-ranked live node is elected, established by the others, and everyone agrees', async t => {
  const { nodes, run } = await zone(['gateway', 'server', 'gateway', 'gateway', 'coordinator'])
  await run(1500)
  const server = nodes[1]!
  t.same(leaders(nodes), [server.id], 'exactly one node says it is the scheduler: the server')
  t.ok(nodes.every(n => leaderSeenBy(n) === server.id), 'every node, the coordinator included, follows it')
  t.equal(server.election.leader()?.term, 1)
  t.equal(server.election.status().established, true)
  t.equal(server.election.status().endorsements, 4, 'endorsed by the four others')
})

t.test('two that claim at once (their views differ): the one ranked behind gives way', async t => {
  let g: Node | undefined
  let mesh: MemoryMesh | undefined
  const { nodes, run } = await zone(['server', 'gateway', 'gateway'], {
    before: (nodes, m) => {
      mesh = m
      g = [...nodes.slice(1)].sort((a, b) => a.id < b.id ? -1 : 1)[0]!
      // this gateway has not heard the server yet: it believes itself first in rank
      g.view.set(nodes[0]!.id, 'dead')
      m.linked = (from, to) => !(from === nodes[0]!.id && to === g!.id)
    }
  })
  await run(300)
  t.equal(g!.member.registry.value<any>(`scheduler/default/${g!.id}`)?.term, 1, 'the gateway claimed too')
  delete mesh!.linked
  await run(1500)
  const server = nodes[0]!
  t.same(leaders(nodes), [server.id], 'the server schedules')
  t.ok(nodes.every(n => leaderSeenBy(n) === server.id), 'everyone follows it, the gateway that claimed too included')
  t.equal(g!.member.registry.value<any>(`scheduler/default/${g!.id}`)?.follows, server.id, 'which withdrew its claim')
})

t.test('three that each started alone and claimed (nobody heard anyone yet): once they hear each other, the best-ranked one schedules', async t => {
  let mesh: MemoryMesh | undefined
  const { nodes, run, roster } = await zone(['gateway', 'server', 'gateway'], {
    before: (nodes, m) => {
      mesh = m
      // a slow start: each agent's settling time passes before it has heard from any peer
      for (const n of nodes) for (const o of nodes) if (o !== n) n.view.set(o.id, 'dead')
      m.linked = () => false
    }
  })
  await run(1000)
  t.ok(nodes.every(n => n.member.registry.value<any>(`scheduler/default/${n.id}`)?.term === 1), 'each claimed term 1, alone')
  t.same(leaders(nodes).sort(), nodes.map(n => n.id).sort(), 'each schedules its own fleet of one')
  delete mesh!.linked
  for (const n of nodes) for (const o of nodes) if (o !== n) n.view.set(o.id, 'alive')
  let doubles = 0
  for (let ms = 0; ms < 4000; ms += 100) {
    await run(100)
    if (leaders(nodes).length > 1) doubles++
  }
  const best = byRank(nodes, new Map(roster.map(r => [r.id, r.role])))[0]!
  t.equal(doubles, 0, 'never two saying they schedule once they hear each other')
  t.same(leaders(nodes), [best.id], 'one scheduler: the best-ranked (the server)')
  t.ok(nodes.every(n => leaderSeenBy(n) === best.id), 'everyone follows it')
  t.ok(nodes.filter(n => n !== best).every(n => n.member.registry.value<any>(`scheduler/default/${n.id}`)?.follows === best.id), 'the others withdrew their claims and endorse it')
  t.equal(best.election.status().established, true, 'established')
})

t.test('a follower stopped for 5 s does not move the scheduler', async t => {
  const { nodes, run, roster } = await zone(['server', 'gateway', 'gateway', 'gateway', 'gateway'])
  await run(1500)
  const leader = nodes.find(n => n.election.isLeader())!
  const ranks = byRank(nodes, new Map(roster.map(r => [r.id, r.role])))
  // the follower that would claim first if the scheduler were gone
  const follower = ranks.find(n => n !== leader)!
  const others = nodes.filter(n => n !== follower)
  await run(5000, others)
  // SIGCONT: its clock jumped, and heartbeat membership believes everyone else dead
  for (const n of nodes) if (n !== follower) follower.view.set(n.id, 'dead')
  follower.clock.now += 5000
  t.equal(follower.election.isLeader(), false, 'it does not call itself scheduler on waking')
  await run(1000)
  for (const n of nodes) follower.view.set(n.id, 'alive')
  await run(3000)
  t.same(leaders(nodes), [leader.id], 'the scheduler did not move')
  t.ok(nodes.every(n => leaderSeenBy(n) === leader.id), 'and everyone still follows it')
  t.ok(nodes.every(n => n.seen.length === 1), 'no node ever followed another scheduler')
  t.equal(follower.member.registry.value<any>(`scheduler/default/${follower.id}`)?.follows, leader.id, 'the follower never claimed')
})

t.test('a scheduler stopped for 5 s is replaced once and does not take the role back', async t => {
  const { nodes, run, roster } = await zone(['server', 'gateway', 'gateway', 'gateway', 'gateway'])
  await run(1500)
  const old = nodes.find(n => n.election.isLeader())!
  const oldTerm = old.election.leader()!.term
  const others = nodes.filter(n => n !== old)
  let overlap = 0
  for (let ms = 0; ms < 5000; ms += 100) {
    // membership notices the silence after 1.5 s
    if (ms === 1500) for (const n of others) n.view.set(old.id, 'suspect')
    await run(100, others)
    if (leaders(others).length > 1) overlap++
  }
  const successor = others.find(n => n.election.isLeader())
  t.ok(successor != null, 'a successor leads while the old scheduler is stopped')
  t.equal(successor!.election.leader()!.term, oldTerm + 1, 'with the next term')
  for (const n of others) n.view.set(old.id, 'alive')
  for (const n of others) old.view.set(n.id, 'dead')
  old.clock.now += 5000
  t.equal(old.election.isLeader(), false, 'the old scheduler says no the moment it wakes, before any timer ran')
  for (let ms = 0; ms < 8000; ms += 100) {
    if (ms === 1000) for (const n of others) old.view.set(n.id, 'alive')
    await run(100)
    if (leaders(nodes).length > 1) overlap++
  }
  t.equal(overlap, 0, 'never two nodes saying they are the scheduler')
  t.same(leaders(nodes), [successor!.id], 'the successor keeps the role')
  t.ok(nodes.every(n => leaderSeenBy(n) === successor!.id), 'the old scheduler follows it too')
  t.equal(old.member.registry.value<any>(`scheduler/default/${old.id}`)?.follows, successor!.id, 'and withdrew its claim')
  t.ok(nodes.every(n => n.seen.join() === [old.id, successor!.id].join()), 'exactly one hand-over, seen the same by every node')
  void roster
})

t.test('a scheduler stalled for less than its lease keeps the role, saying no until it has heard from the others', async t => {
  // a 4 s lease: a 3.5 s stall is past the stall threshold (3 s here) and lapses the holder's own view of its
  // lease (3.5 s from the start of its last renewal), but not the others' (4 s from its arrival, under 0.5 s later)
  const { nodes, run } = await zone(['server', 'gateway', 'gateway'], { init: { leaseMs: 4000, stallThresholdMs: 3000 } })
  await run(1500)
  const leader = nodes.find(n => n.election.isLeader())!
  const term = leader.election.leader()!.term
  const others = nodes.filter(n => n !== leader)
  await run(3500, others)
  leader.clock.now += 3500
  t.equal(leader.election.isLeader(), false, 'not the scheduler the moment it wakes')
  leader.election.tick()
  await settle()
  t.equal(leader.election.isLeader(), false, 'nor during its probation')
  await run(2000)
  t.same(leaders(nodes), [leader.id], 'then the scheduler again')
  t.equal(leader.election.leader()?.term, term, 'with the same term')
  t.ok(nodes.every(n => n.seen.length === 1), 'nobody followed another scheduler meanwhile')
})

t.test('after a partition heals the side most members follow keeps the zone, the other steps down', async t => {
  const { mesh, nodes, run } = await zone(['server', 'gateway', 'gateway', 'gateway', 'gateway'])
  await run(1500)
  const leader = nodes.find(n => n.election.isLeader())!
  const big = [leader, ...nodes.filter(n => n !== leader).slice(0, 2)]
  const small = nodes.filter(n => !big.includes(n))
  const side = (id: string): boolean => big.some(n => n.id === id)
  mesh.linked = (from, to) => side(from) === side(to)
  for (const a of big) for (const b of small) { a.view.set(b.id, 'dead'); b.view.set(a.id, 'dead') }
  await run(5000)
  t.same(leaders(big), [leader.id], 'the big side keeps its scheduler')
  const other = leaders(small)
  t.equal(other.length, 1, 'the small side elects its own')
  t.ok(small.every(n => leaderSeenBy(n) === other[0]), 'and follows it')
  delete mesh.linked
  for (const a of big) for (const b of small) { a.view.set(b.id, 'alive'); b.view.set(a.id, 'alive') }
  for (const a of nodes) for (const b of nodes) if (a !== b) await a.member.registry.syncWith(b.member.peerId)
  await run(3000)
  t.same(leaders(nodes), [leader.id], 'one scheduler: the one most members followed')
  t.ok(nodes.every(n => leaderSeenBy(n) === leader.id), 'everyone follows it')
  t.equal(nodes[0]!.member.registry.list('scheduler/').filter(e => (e.value as any)?.term != null && (e.value as any).follows == null).length, 1, 'the other claim was withdrawn')
})

t.test('a peer with a valid certificate cannot take the zone with a forged term', async t => {
  // two servers: whatever its peer id, the rogue gateway never ranks first
  const { nodes, rogues, run } = await zone(['server', 'server', 'gateway', 'gateway'], { rogues: 1 })
  const rogue = rogues[0]!
  const rid = rogue.peerId.toString()
  await run(1500)
  const leader = nodes.find(n => n.election.isLeader())!
  const term = leader.election.leader()!.term
  await rogue.registry.set(`placement/d1/${leader.id}`.replace(leader.id, rid), { term: 1000, nodes: [rid], replicas: 1, bundle: 'b', deploymentTs: [1, 0], at: 0 })
  await leader.member.registry.set(`placement/d1/${leader.id}`, { term, nodes: [leader.id], replicas: 1, bundle: 'b', deploymentTs: [1, 0], at: 0 })
  for (const forged of [2 ** 53 - 1, MAX_TERM + 1, term + 1]) {
    // renewed like a real lease, every 500 ms
    for (let i = 0; i < 8; i++) {
      await rogue.registry.set(`scheduler/default/${rid}`, { term: forged, leaseMs: LEASE, since: Date.now() })
      await run(500)
    }
    t.same(leaders(nodes), [leader.id], `a claim with term ${forged} does not move the scheduler`)
    t.ok(nodes.every(n => leaderSeenBy(n) === leader.id), 'nobody follows the rogue')
    for (const n of nodes) {
      t.equal(winningPlacement(n.member.registry, 'd1', n.election)?.scheduler, leader.id, 'its placement with term 1000 counts for nothing')
    }
  }
  t.ok(nodes.every(n => n.election.leader() == null || n.election.leader()!.term === term), 'no node adopted a forged term')
  // when the scheduler goes, the rogue (not ranked first) does not inherit the zone either
  const others = nodes.filter(n => n !== leader)
  for (const n of others) n.view.set(leader.id, 'dead')
  for (let i = 0; i < 10; i++) {
    await rogue.registry.set(`scheduler/default/${rid}`, { term: term + 1, leaseMs: LEASE, since: Date.now() })
    await run(500, others)
  }
  const next = others.find(n => n.election.isLeader())
  t.ok(next != null, 'an honest node took over')
  t.ok(others.every(n => leaderSeenBy(n) === next!.id), 'and everyone follows it, not the rogue')
})

t.test('a node whose local health is degraded does not claim; the next in rank does after its stagger', async t => {
  let first: Node | undefined
  const { nodes, run } = await zone(['gateway', 'gateway', 'gateway'], {
    before: nodes => {
      first = [...nodes].sort((a, b) => a.id < b.id ? -1 : 1)[0]!
      first.healthy = false
    }
  })
  await run(1000)
  t.same(leaders(nodes), [], 'no one claims while the best-ranked is alive, however unhealthy')
  // the stagger: longer than a stalled node defers (2 leases) plus a lease
  await run(5500)
  const leader = leaders(nodes)
  t.equal(leader.length, 1, 'after the stagger the next one claims')
  t.not(leader[0], first!.id)
  first!.healthy = true
  await run(2000)
  t.same(leaders(nodes), leader, 'recovering does not take the role')
})

t.test('in a failover, the node first in line claims even while its local health is degraded', async t => {
  const { nodes, run, roster } = await zone(['server', 'gateway', 'gateway'])
  await run(1500)
  const server = nodes[0]!
  t.same(leaders(nodes), [server.id], 'the server schedules')
  const others = nodes.slice(1)
  const [next, last] = byRank(others, new Map(roster.map(r => [r.id, r.role])))
  // starved of CPU: its local health stays degraded for the whole failover
  next!.healthy = false
  // the server stops (it is not ticked, so it renews nothing); the failure detector suspects it
  for (const n of others) n.view.set(server.id, 'suspect')
  await run(LEASE + 1500, others)
  t.same(leaders(others), [next!.id], 'the next in rank took over, well before the stagger the one behind it would wait')
  t.equal(leaderSeenBy(last!), next!.id, 'and the last one follows it')
})

t.test('a node whose clock disagrees with its peers is not elected', async t => {
  const { nodes, run, roster } = await zone(['server', 'gateway', 'gateway'])
  const server = byRank(nodes, new Map(roster.map(r => [r.id, r.role])))[0]!
  for (const n of nodes) n.view.skewed.add(server.id)
  await run(4000)
  const leader = leaders(nodes)
  t.equal(leader.length, 1)
  t.not(leader[0], server.id, 'the skewed server stays out')
  t.ok(nodes.every(n => leaderSeenBy(n) === leader[0]), 'it follows the scheduler like the others')
})

t.test('terms and followed schedulers survive a restart', async t => {
  const { nodes, run } = await zone(['gateway', 'gateway'])
  await run(1500)
  const leader = nodes.find(n => n.election.isLeader())!
  const follower = nodes.find(n => n !== leader)!
  t.same(follower.store.saved.get('default'), { floor: 1, followed: [{ peerId: leader.id, term: 1 }] })
  await follower.election.stop()
  const again = new Election({ peerId: follower.member.peerId, registry: follower.member.registry, membership: follower.view, logger: quiet, store: follower.store, monotonic: () => follower.clock.now }, { settleMs: 0, leaseMs: LEASE })
  await again.start()
  t.teardown(async () => { await again.stop() })
  t.same(again.followed('default'), [{ peerId: leader.id, term: 1 }], 'the scheduler it followed is remembered before any renewal arrives')
  t.equal(winningPlacement(follower.member.registry, 'none', again), undefined)
})

t.test('a suspect scheduler keeps the zone: only its death frees it', async t => {
  // SWIM suspicion is an accusation the holder may refute (after a partition
  // heals, the other side's old news makes it suspect for a moment)
  const { nodes, run } = await zone(['gateway', 'gateway', 'gateway'])
  await run(1500)
  const leader = nodes.find(n => n.election.isLeader())!
  const term = leader.election.leader()!.term
  const others = nodes.filter(n => n !== leader)
  for (const n of others) n.view.set(leader.id, 'suspect')
  await run(3 * LEASE)
  t.same(leaders(nodes), [leader.id], 'it still schedules')
  t.ok(others.every(n => leaderSeenBy(n) === leader.id), 'the others still follow the suspect scheduler')
  t.ok(nodes.every(n => n.election.leaderOf('default')?.term === term), 'the term did not move')
  t.ok(others.every(n => n.member.registry.value<any>(`scheduler/default/${n.id}`)?.follows === leader.id), 'nobody claimed')
  // dead, and silent: the lease runs out and another takes the zone
  for (const n of others) n.view.set(leader.id, 'dead')
  await run(3 * LEASE, others)
  const next = others.find(n => n.election.isLeader())
  t.ok(next != null, 'once it is dead and its lease lapsed, another schedules')
  t.ok((next?.election.leader()?.term ?? 0) > term, 'with a higher term')
})

t.test('a node with peers to join claims nothing before it has met one (joinMs)', async t => {
  const { nodes, run } = await zone(['gateway', 'gateway'], {
    init: { joinMs: 4000 },
    before: nodes => {
      // neither has met the other yet
      for (const n of nodes) for (const o of nodes) if (o !== n) n.view.set(o.id, 'dead')
    }
  })
  await run(3000)
  t.same(leaders(nodes), [], 'nobody claims while it has met no one')
  for (const n of nodes) for (const o of nodes) if (o !== n) n.view.set(o.id, 'alive')
  await run(1500)
  t.equal(leaders(nodes).length, 1, 'once they meet, one claims')
  t.ok(nodes.every(n => leaderSeenBy(n) === leaders(nodes)[0]), 'and the other follows it')
})

t.test('a node alone past joinMs claims anyway', async t => {
  const { nodes, run } = await zone(['gateway'], { init: { joinMs: 2000 } })
  await run(1500)
  t.same(leaders(nodes), [], 'not before joinMs')
  await run(1000)
  t.same(leaders(nodes), [nodes[0]!.id], 'after it, alone, it schedules its fleet of one')
})
