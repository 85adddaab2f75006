import t from 'tap'
import fc from 'fast-check'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { pino } from 'pino'
import { Election } from '../../node/scheduler/election.ts'
import { deploymentKey, placementKey } from '../../node/scheduler/keys.ts'
import { winningPlacement } from '../../node/scheduler/placements.ts'
import { PredictRouter } from '../../node/scheduler/router.ts'
import { Scheduler } from '../../node/scheduler/scheduler.ts'
import { WriteBudget } from '../../node/scheduler/throttle.ts'
import { sleep, waitFor } from '../helpers/cluster.ts'
import { FakeMembership, type FakeMember } from '../helpers/fake-membership.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import type { Role } from '../../node/identity/certificate.ts'
import type { RegistryChange } from '../../node/registry/watch.ts'

const quiet = pino({ level: process.env.LOG ?? 'silent' })
const BUNDLE = 'b'.repeat(64)

interface Agent {
  member: MemoryMember
  id: string
  view: FakeMembership
  election?: Election
  scheduler?: Scheduler
}

/**
 * Agents on registries gossiping in memory: the listed roles run an
 * election and a scheduler each; `rogues` only hold a certificate and write
 * what they like under their own keys, as a stolen gateway would.
 */
async function mesh (roles: Role[], options: { rogues?: number, progress?: { deadlineMs: number, backoffMs: number } } = {}) {
  const m = new MemoryMesh()
  const members: MemoryMember[] = []
  for (let i = 0; i < roles.length + (options.rogues ?? 0); i++) members.push(await m.add())
  await m.introduce()
  for (const member of members) await member.registry.start()
  const roster: FakeMember[] = members.map((member, i) => ({ id: member.peerId.toString(), role: roles[i] ?? 'gateway' }))
  const agents: Agent[] = members.map(member => ({ member, id: member.peerId.toString(), view: new FakeMembership(member.peerId.toString(), () => roster) }))
  for (const a of agents) await a.member.registry.set(`node/${a.id}`, { role: roster.find(r => r.id === a.id)!.role, labels: {}, addresses: [], sensors: [], backend: null, version: 'test', cert: a.member.cert, startedAt: Date.now() })
  for (const a of agents.slice(0, roles.length)) {
    a.election = new Election({ peerId: a.member.peerId, registry: a.member.registry, membership: a.view, logger: quiet }, { settleMs: 0, checkIntervalMs: 50, leaseMs: 2000 })
    a.scheduler = new Scheduler({
      peerId: a.member.peerId, registry: a.member.registry, membership: a.view, election: a.election, resolveBundle: () => BUNDLE, logger: quiet
    }, { intervalMs: 100, ...(options.progress == null ? {} : { progress: options.progress }) })
    a.election.addEventListener('leader:change', () => { a.scheduler!.kick() })
    await a.election.start()
    await a.scheduler.start()
  }
  t.teardown(async () => {
    for (const a of agents) {
      await a.scheduler?.stop()
      await a.election?.stop()
    }
    for (const member of members) await member.registry.stop()
  })
  const deploy = async (spec: Record<string, unknown>): Promise<void> => {
    const key = deploymentKey(String(spec.id))
    await agents[0]!.member.registry.set(key, spec, { auth: await m.authorize(agents[0]!.member, key, spec) })
  }
  const leader = await waitFor(() => agents.find(a => a.election?.isLeader() === true), 'a scheduler', 10_000, 20)
  return { agents, roster, deploy, leader, rogues: agents.slice(roles.length) }
}

/** Counts this node's own writes (or only its deletes) under a prefix. */
function writes (a: Agent, prefix: string, only?: 'deletes'): { count: number, off: () => void } {
  const counter = { count: 0, off: () => {} }
  counter.off = a.member.registry.onChange(prefix, (c: RegistryChange) => {
    if (c.via === 'local' && (only == null || c.entry.deleted)) counter.count++
  })
  return counter
}

t.test('forged placements and terms are ignored, and no input makes the scheduler write in a loop', async t => {
  const { agents, deploy, leader, rogues } = await mesh(['server', 'gateway', 'gateway'], { rogues: 1 })
  const rogue = rogues[0]!
  const follower = agents.find(a => a.election != null && a !== leader)!
  await deploy({ id: 'd1', model: { name: 'm', digest: BUNDLE } })
  await waitFor(() => leader.member.registry.value(placementKey('d1', leader.id)), 'the scheduler to place d1', 10_000, 20)
  const term = leader.election!.leader()!.term
  const byLeader = writes(leader, 'placement/')
  const byFollower = writes(follower, 'placement/', 'deletes')
  const claimWrites = writes(follower, 'scheduler/')
  const lag = monitorEventLoopDelay({ resolution: 10 })
  lag.enable()
  const rss = process.memoryUsage.rss()
  // three seconds of what a stolen gateway gossips and what a local process writes through a follower's API
  const until = Date.now() + 3000
  let forged = 0
  while (Date.now() < until) {
    await rogue.member.registry.set(placementKey('d1', rogue.id), { term: 1000 + forged, nodes: [rogue.id], replicas: 1, bundle: BUNDLE, deploymentTs: [1, 0], at: Date.now() })
    await rogue.member.registry.set(`scheduler/default/${rogue.id}`, { term: forged % 2 === 0 ? 2 ** 53 - 1 : term + 1, leaseMs: 2000, since: Date.now() })
    await follower.member.registry.set(placementKey('d1', follower.id), { term: 1000, nodes: [follower.id], replicas: 1, bundle: BUNDLE, deploymentTs: [1, 0], at: Date.now() })
    await follower.member.registry.set(`scheduler/default/${follower.id}`, { term: 2 ** 31 - 1, leaseMs: 60_000, since: 0 })
    forged++
    await sleep(5)
  }
  lag.disable()
  t.ok(forged >= 20, `${forged} rounds of forged writes`)
  t.equal(byLeader.count, 0, 'the scheduler did not rewrite its placement once')
  t.ok(byFollower.count <= 4, `the follower deleted the forged placement written under its name ${byFollower.count} times in 3 s (backing off), not once per write`)
  t.ok(claimWrites.count - forged <= 8, `and put its endorsement back ${claimWrites.count - forged} times`)
  t.ok(lag.max / 1e6 < 1000, `the event loop kept answering (max delay ${Math.round(lag.max / 1e6)} ms)`)
  t.ok(process.memoryUsage.rss() - rss < 100 * 1024 * 1024, 'memory stayed flat')
  t.same(agents.filter(a => a.election?.isLeader() === true).map(a => a.id), [leader.id], 'the scheduler did not move')
  for (const a of agents) {
    if (a.election == null) continue
    t.equal(winningPlacement(a.member.registry, 'd1', a.election)?.scheduler, leader.id, 'every agent follows the real placement')
  }
  // the attack stops: what was written under the follower's name is cleaned up by the follower itself
  await waitFor(() => follower.member.registry.value(placementKey('d1', follower.id)) == null, 'the forged placement to be retired', 90_000, 50)
  await waitFor(() => (follower.member.registry.value<any>(`scheduler/default/${follower.id}`))?.follows === leader.id, 'the endorsement to be back', 10_000, 50)
  t.pass('a poisoned registry heals by itself')
  byLeader.off()
  byFollower.off()
  claimWrites.off()
})

t.test('a placement budget: whatever the attempts, writes of one key back off', async t => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 400 }), gaps => {
    const budget = new WriteBudget(1000, 60_000)
    let now = 0
    let last = -Infinity
    for (const gap of gaps) {
      now += gap
      if (!budget.allows('k', now)) continue
      if (now - last < 1000) return false
      budget.wrote('k', now)
      last = now
    }
    return true
  }), { numRuns: 500 })
  const budget = new WriteBudget(1000, 60_000)
  let n = 0
  for (let now = 0; now < 300_000; now += 10) if (budget.allows('k', now)) { budget.wrote('k', now); n++ }
  t.ok(n <= 12, `a key someone rewrites every 10 ms for 5 minutes is written ${n} times`)
  t.pass('never twice within the minimum delay')
})

t.test('a placed node that makes no progress is placed around, and rejoins by itself', async t => {
  const { agents, deploy, leader } = await mesh(['server', 'gateway', 'gateway'], { progress: { deadlineMs: 1000, backoffMs: 4000 } })
  const [a, b] = agents.filter(x => x !== leader)
  // the leader runs two other instances so it is chosen last; a and b tie and go by peer id
  for (const name of ['x', 'y']) await leader.member.registry.set(`instance/${leader.id}/${name}`, { state: 'running' })
  await deploy({ id: 'd2', model: { name: 'm', digest: BUNDLE }, placement: { role: 'gateway' } })
  const placedOn = (): string | undefined => (winningPlacement(leader.member.registry, 'd2', leader.election!)?.nodes ?? [])[0]
  const first = await waitFor(placedOn, 'd2 placed', 10_000, 20)
  const stuck = first === a!.id ? a! : b!
  const other = stuck === a ? b! : a!
  // the chosen node never reports an instance (its clock is a year behind, say)
  const moved = await waitFor(() => placedOn() === other.id, 'd2 to move off the node that made no progress', 10_000, 50)
  t.ok(moved, 'moved after the deadline')
  await other.member.registry.set(`instance/${other.id}/m`, { state: 'running', deployment: 'd2' })
  await sleep(5000)
  t.equal(placedOn(), other.id, 'a running replica stays where it is after the backoff')
  // its node is drained: the first node, out of its backoff, is chosen again
  await other.member.registry.set(`node/${other.id}`, { role: 'gateway', labels: {}, addresses: [], sensors: [], backend: null, version: 'test', cert: other.member.cert, startedAt: Date.now(), drained: true })
  await waitFor(() => placedOn() === stuck.id, 'd2 back on the node once its backoff ended', 10_000, 50)
  t.pass('the node rejoined placement by itself')
})

t.test('a node whose clock disagrees with its peers is not placed on, and is again once fixed', async t => {
  const { agents, deploy, leader } = await mesh(['server', 'gateway'])
  const gateway = agents.find(x => x !== leader)!
  leader.view.skewed.add(gateway.id)
  t.notOk(leader.scheduler!.candidates().some(c => c.peerId === gateway.id), 'left out of the candidates')
  await deploy({ id: 'd3', model: { name: 'm', digest: BUNDLE }, placement: { role: 'gateway' } })
  await sleep(1000)
  t.equal(winningPlacement(leader.member.registry, 'd3', leader.election!)?.nodes.length ?? 0, 0, 'the only gateway is skewed: nothing placed')
  leader.view.skewed.delete(gateway.id)
  await waitFor(() => winningPlacement(leader.member.registry, 'd3', leader.election!)?.nodes[0] === gateway.id, 'placed once its clock agrees', 10_000, 50)
  t.pass('placed again once fixed')
})

/** A predict router on `node`'s registry and membership view, with no runtime and no network: for its choice of replicas. */
function routerOn (node: { member: MemoryMember, view: FakeMembership, election?: Election }): PredictRouter {
  return new PredictRouter({
    peerId: node.member.peerId, registry: node.member.registry, membership: node.view, placements: node.election!,
    runtime: { has: () => false, get: () => { throw new Error('none here') } } as any,
    network: { handle: async () => {}, unhandle: async () => {}, dialProtocol: async () => { throw new Error('no network in this test') } },
    logger: quiet
  })
}

t.test('the predict router only forwards to replicas a valid placement names', async t => {
  const { agents, deploy, leader, rogues } = await mesh(['server', 'gateway'], { rogues: 1 })
  const rogue = rogues[0]!
  const gateway = agents.find(x => x !== leader && x.election != null)!
  await deploy({ id: 'd4', model: { name: 'm', digest: BUNDLE }, placement: { role: 'gateway', nodes: [gateway.id] } })
  await waitFor(() => winningPlacement(leader.member.registry, 'd4', leader.election!)?.nodes[0] === gateway.id, 'd4 placed on the gateway', 10_000, 20)
  await gateway.member.registry.set(`instance/${gateway.id}/m`, { state: 'running', deployment: 'd4' })
  // a stolen gateway announces a replica nobody placed, to draw the requests
  await rogue.member.registry.set(`instance/${rogue.id}/m`, { state: 'running', deployment: 'd4' })
  await sleep(100)
  const router = routerOn(leader)
  t.same(router.replicas('m').map(r => r.peerId), [gateway.id], 'only the placed replica')
  leader.view.set(gateway.id, 'suspect')
  t.same(router.replicas('m').map(r => r.peerId), [gateway.id], 'a suspect replica is still tried when no alive node has one')
  leader.view.set(gateway.id, 'dead')
  t.same(router.replicas('m').map(r => r.peerId), [], 'a dead one is not')
  leader.view.set(gateway.id, 'alive')
})

t.test('the predict router prefers replicas on alive nodes to those on suspect ones', async t => {
  const { agents, deploy, leader } = await mesh(['server', 'gateway', 'gateway'])
  const [g1, g2] = agents.filter(x => x !== leader)
  await deploy({ id: 'd5', model: { name: 'm5', digest: BUNDLE }, replicas: 2, placement: { role: 'gateway' } })
  await waitFor(() => winningPlacement(leader.member.registry, 'd5', leader.election!)?.nodes.length === 2, 'd5 placed on both gateways', 10_000, 20)
  await g1!.member.registry.set(`instance/${g1!.id}/m5`, { state: 'running', deployment: 'd5' })
  await g2!.member.registry.set(`instance/${g2!.id}/m5`, { state: 'running', deployment: 'd5' })
  await sleep(100)
  const router = routerOn(leader)
  t.same(router.replicas('m5').map(r => r.peerId).sort(), [g1!.id, g2!.id].sort(), 'both while both are alive')
  leader.view.set(g1!.id, 'suspect')
  t.same(router.replicas('m5').map(r => r.peerId), [g2!.id], 'only the alive one while the other is suspect')
})
