import t from 'tap'
import { pino } from 'pino'
import { Election } from '../../node/scheduler/election.ts'
import { MemoryTermStore } from '../../node/scheduler/terms.ts'
import { ZoneSummaryWriter, type ZoneSummary } from '../../node/scheduler/zone-summary.ts'
import { winningPlacement, type PlacementRecord } from '../../node/scheduler/placements.ts'
import { MemoryMesh, type MemoryMember } from '../helpers/memory-mesh.ts'
import { sleep } from '../helpers/cluster.ts'
import { FakeMembership } from '../helpers/fake-membership.ts'

// Leases are zone-local: a zone elects its scheduler from its own leases and
// endorsements, which never leave it; other zones learn who schedules it
// (and with which term, so its placements count) from its summary, believed
// only when the zone's fleet-wide endorsements (`endorse/<zone>/<peer>`)
// establish the scheduler it names.
const quiet = pino({ level: process.env.LOG ?? 'silent' })
const settle = async (): Promise<void> => { for (let i = 0; i < 6; i++) await sleep(2) }

t.test('each zone elects from its own leases; the other zone follows it by its summary', async t => {
  const mesh = new MemoryMesh()
  const spec = [['a', 'server'], ['a', 'gateway'], ['b', 'server'], ['b', 'gateway']] as const
  const members: MemoryMember[] = []
  for (const [zone] of spec) members.push(await mesh.add({ labels: { zone } }))
  await mesh.introduce()
  for (const m of members) await m.registry.start()
  for (const m of members) await m.registry.set(`node/${m.peerId.toString()}`, { role: 'gateway', cert: m.cert })
  await settle()
  const roster = members.map((m, i) => ({ id: m.peerId.toString(), role: spec[i]![1], labels: { zone: spec[i]![0] } }))
  const clock = { now: 1_000_000 }
  const nodes = members.map((member, i) => {
    const id = member.peerId.toString()
    const view = new FakeMembership(id, () => roster)
    // the config asks for zone "elsewhere"; the certificate (what peers believe) says a or b, and wins
    const election = new Election({
      peerId: member.peerId, registry: member.registry, membership: view, logger: quiet, store: new MemoryTermStore(),
      labels: () => ({ zone: spec[i]![0] }), monotonic: () => clock.now
    }, { labels: { zone: 'elsewhere' }, checkIntervalMs: 250, settleMs: 0, leaseMs: 2000, renewIntervalMs: 500 })
    const summary = new ZoneSummaryWriter({ peerId: id, registry: member.registry, members: () => view.members(), election, logger: quiet })
    return { member, id, zone: spec[i]![0], election, summary }
  })
  for (const n of nodes) await n.election.start()
  t.teardown(async () => {
    for (const n of nodes) await n.election.stop()
    for (const m of members) await m.registry.stop()
  })
  t.same(nodes.map(n => n.election.zone), ['a', 'a', 'b', 'b'], 'each election runs for its certificate\'s zone, not the config\'s')
  const run = async (ms: number): Promise<void> => {
    for (let done = 0; done < ms; done += 100) {
      clock.now += 100
      for (const n of nodes) n.election.tick()
      await settle()
    }
  }
  await run(4000)
  const leaderIn = (zone: string): string | undefined => nodes.find(n => n.zone === zone && n.election.isLeader())?.id
  const [a, b] = [leaderIn('a'), leaderIn('b')]
  t.ok(a != null && b != null, 'each zone has its scheduler')
  for (const n of nodes) {
    const foreign = n.zone === 'a' ? 'b' : 'a'
    t.same(n.member.registry.list(`scheduler/${foreign}/`), [], `${n.zone}'s node holds none of zone ${foreign}'s leases`)
    t.ok(n.member.registry.list(`scheduler/${n.zone}/`).length >= 2, `but its own zone's (claim and endorsement)`)
    t.equal(n.election.leaderOf(n.zone)?.peerId, n.zone === 'a' ? a : b, 'and agrees on its own zone\'s scheduler')
    t.equal(n.election.leaderOf(foreign), undefined, 'before any summary, the other zone\'s scheduler is not known')
  }
  for (const n of nodes) await n.summary.tick()
  await run(500)
  const termOf = (zone: string): number | undefined => nodes.find(n => n.zone === zone)!.election.leaderOf(zone)?.term
  for (const n of nodes) {
    const foreign = n.zone === 'a' ? 'b' : 'a'
    t.same(n.election.leaderOf(foreign), { peerId: foreign === 'a' ? a : b, term: termOf(foreign) }, `${n.zone}'s node follows zone ${foreign}'s scheduler, with its term, by its summary`)
  }
  const inB = nodes.filter(n => n.zone === 'b')
  const follower = inB.find(n => n.id !== b)!
  for (const n of nodes) t.same(n.member.registry.value(`endorse/b/${follower.id}`), { follows: b, term: termOf('b') }, `${n.zone}'s node holds zone b's endorsements, fleet-wide`)

  // zone b's follower, with a valid zone-b certificate, names itself scheduler with a higher term and places a zone-b deployment (`forged`) on itself
  const forgedTerm = termOf('b')! + 5
  const forged: ZoneSummary = { zone: 'b', scheduler: follower.id, term: forgedTerm, at: Date.now(), members: { alive: 2, suspect: 0, dead: 0 }, instances: {}, reporting: 0, cpuPct: null, memoryPct: null }
  await follower.member.registry.set(`zone/b/${follower.id}`, forged)
  await follower.member.registry.set(`placement/forged/${follower.id}`, { term: forgedTerm, nodes: [follower.id], replicas: 1, bundle: 'sha256:x', deploymentTs: [1, 0], at: 1 } satisfies PlacementRecord)
  const inA = nodes.filter(n => n.zone === 'a')
  const runA = async (): Promise<void> => { for (const n of inA) n.election.tick(); await settle() }
  await runA()
  for (const n of inA) {
    t.same(n.election.leaderOf('b'), { peerId: b, term: termOf('b') }, 'a summary naming a scheduler zone b does not endorse is not adopted')
    t.equal(winningPlacement(n.member.registry, 'forged', n.election, 'b')?.scheduler, undefined, 'and its placement is not the winning one')
  }

  // genuine endorsements (zone b's other member follows it) establish it
  await inB.find(n => n.id === b)!.member.registry.set(`endorse/b/${b!}`, { follows: follower.id, term: forgedTerm })
  await runA()
  for (const n of inA) {
    t.same(n.election.leaderOf('b'), { peerId: follower.id, term: forgedTerm }, 'endorsed by the rest of zone b, it is adopted')
    t.same(winningPlacement(n.member.registry, 'forged', n.election, 'b')?.nodes, [follower.id], 'and its placement wins')
  }

  // an endorsement of zone b written by a zone-a node is refused
  await t.rejects(inA[0]!.member.registry.set(`endorse/b/${inA[0]!.id}`, { follows: follower.id, term: forgedTerm }), { code: 'ERR_WRONG_ZONE' }, 'a node endorses only in its own zone')
})
