import t from 'tap'
import { admitRollout } from '../../node/release/admit.ts'
import { newRolloutSpec, parseRolloutSpec, parseWaves, type RolloutSpec } from '../../node/release/rollout.ts'
import { SETTLE_MS, rank, rolloutFor, rolloutStatus, waveBounds, type FleetNode } from '../../node/release/waves.ts'
import { readFleet } from '../../node/release/fleet.ts'
import type { ReleaseRecord } from '../../node/release/record.ts'
import type { Member } from '../../node/membership/types.ts'

const DIGEST = 'a'.repeat(64)
const NOW = Date.parse('2026-11-30T06:00:00Z')

function spec (over: Partial<RolloutSpec> = {}): RolloutSpec {
  return { ...newRolloutSpec({ id: 'r1', releases: [{ arch: 'x64', version: '1.1.0', digest: DIGEST, size: 1000 }], waves: [33, 66, 100], now: new Date(NOW - 60_000) }), ...over }
}

function record (over: Partial<ReleaseRecord> = {}): ReleaseRecord {
  return { version: '1.0.0', digest: null, arch: 'x64', node: '22.0.0', managed: true, state: 'idle', at: NOW - 60_000, startedAt: NOW - 120_000, ...over }
}

/** n managed gateways on 1.0.0, in the rollout's order. */
function fleet (n: number, id = 'r1'): FleetNode[] {
  const nodes = Array.from({ length: n }, (_, i) => ({ peer: `peer-${i}`, role: 'gateway', labels: { site: i % 2 === 0 ? 'a' : 'b' }, record: record(), liveness: 'alive' as const }))
  return nodes.sort((a, b) => rank(id, a.peer) < rank(id, b.peer) ? -1 : 1)
}

t.test('waves cut the targets cumulatively; each wave has at least one node more; the last has all', async t => {
  t.same(waveBounds([5, 25, 100], 3), [1, 2, 3])
  t.same(waveBounds([5, 25, 100], 100), [5, 25, 100])
  t.same(waveBounds([50, 100], 1), [1, 1])
  t.same(waveBounds([100], 0), [0])
  t.same(parseWaves('5%,25%, 100%'), [5, 25, 100])
  t.throws(() => parseWaves('5%,x'), { code: 'ERR_ROLLOUT_SPEC', field: '--waves' })
})

t.test('only the first wave runs until it is healthy; the next waits waveWaitSec after it', async t => {
  const nodes = fleet(3)
  let s = rolloutStatus(spec(), nodes, NOW)
  t.equal(s.currentWave, 0)
  t.same(s.targets.map(x => x.wave), [0, 1, 2], 'one node per wave, in rank order')
  t.same(s.targets.map(x => x.outcome), ['waiting', 'waiting', 'waiting'])
  nodes[0]!.record = record({ state: 'verifying', version: '1.1.0', rollout: 'r1' })
  s = rolloutStatus(spec(), nodes, NOW)
  t.equal(s.currentWave, 0, 'on probation is not done')
  t.equal(s.targets[0]!.outcome, 'updating')
  nodes[0]!.record = record({ state: 'healthy', version: '1.1.0', rollout: 'r1', healthyAt: NOW - 1000 })
  t.equal(rolloutStatus(spec(), nodes, NOW).currentWave, 1, 'healthy: the next wave starts')
  t.equal(rolloutStatus(spec({ waveWaitSec: 60 }), nodes, NOW).currentWave, 0, 'but not before waveWaitSec')
  t.equal(rolloutStatus(spec({ waveWaitSec: 60 }), nodes, NOW + 60_000).currentWave, 1)
})

t.test('failures beyond maxFailures halt it; paused and aborted say so', async t => {
  const nodes = fleet(3)
  nodes[0]!.record = record({ state: 'rolled-back', rollout: 'r1', target: '1.1.0', detail: 'it did not start' })
  const halted = rolloutStatus(spec(), nodes, NOW)
  t.equal(halted.phase, 'halted')
  t.equal(halted.failures, 1)
  t.equal(rolloutStatus(spec({ maxFailures: 1 }), nodes, NOW).phase, 'active', 'within the budget it goes on')
  t.equal(rolloutStatus(spec({ maxFailures: 1 }), nodes, NOW).currentWave, 1, 'a failed node is through')
  t.equal(rolloutStatus(spec({ state: 'paused', maxFailures: 1 }), nodes, NOW).phase, 'paused')
  t.equal(rolloutStatus(spec({ state: 'aborted' }), nodes, NOW).phase, 'aborted')
})

t.test('an offline node that never started does not hold the waves; the rollout is not done without it', async t => {
  const nodes = fleet(3)
  nodes[0]!.liveness = 'dead'
  nodes[0]!.livenessForMs = SETTLE_MS
  const s = rolloutStatus(spec(), nodes, NOW)
  t.equal(s.targets[0]!.outcome, 'offline')
  t.equal(s.currentWave, 1)
  for (const n of nodes.slice(1)) n.record = record({ state: 'healthy', version: '1.1.0', rollout: 'r1', healthyAt: NOW - 1000 })
  t.equal(rolloutStatus(spec(), nodes, NOW).phase, 'active', 'waiting for the offline node')
  nodes[0]!.record = record({ state: 'healthy', version: '1.1.0', rollout: 'r1', healthyAt: NOW })
  nodes[0]!.liveness = 'alive'
  t.equal(rolloutStatus(spec(), nodes, NOW).phase, 'done')
})

t.test('a node only just down, whose start this node has not heard of, holds the next wave for SETTLE_MS', async t => {
  // wave 1 restarting into the release, its records of the update not yet here
  for (const liveness of ['dead', 'unknown'] as const) {
    const nodes = fleet(3)
    nodes[0]!.liveness = liveness
    t.equal(rolloutStatus(spec(), nodes, NOW).currentWave, 0, `${liveness}, for no time we know of: held`)
    nodes[0]!.livenessForMs = SETTLE_MS - 1
    const s = rolloutStatus(spec(), nodes, NOW)
    t.equal(s.targets[0]!.outcome, 'offline', 'it shows as offline')
    t.equal(s.currentWave, 0, `${liveness} for less than the grace: held`)
    nodes[0]!.livenessForMs = SETTLE_MS
    t.equal(rolloutStatus(spec(), nodes, NOW).currentWave, 1, `${liveness} for the grace: the next wave goes`)
    nodes[0]!.record = record({ state: 'restarting', rollout: 'r1', target: '1.1.0', at: NOW - 5000 })
    t.equal(rolloutStatus(spec(), nodes, NOW).currentWave, 0, 'once its record says it is restarting, it holds the wave however long it is down (until it counts failed)')
  }
})

t.test('a node whose release record is not here yet keeps its place in the order until SETTLE_MS, then is excluded', async t => {
  // what went wrong before: the second wave's node, its copy lacking the first's record, counted itself first
  const full = fleet(3)
  const [first, second] = full as [FleetNode, FleetNode, FleetNode]
  const view = full.map(n => n === first ? { peer: n.peer, role: 'gateway', labels: {}, liveness: 'alive' as const, livenessForMs: 5000 } : n)
  const s = rolloutStatus(spec(), view, NOW)
  t.same(s.targets.map(x => [x.peer, x.wave]), full.map((n, i) => [n.peer, i]), 'every node keeps its wave')
  t.equal(s.targets[0]!.outcome, 'waiting', 'the unheard one is waiting, not through')
  t.match(s.targets[0]!.detail, /not reached/)
  t.equal(s.currentWave, 0, `so ${second.peer} (wave 2) does not start`)
  t.same(s.excluded, [])
  view[0]!.livenessForMs = SETTLE_MS
  const later = rolloutStatus(spec(), view, NOW)
  t.same(later.excluded.map(e => e.peer), [first.peer], 'after SETTLE_MS it is excluded as an agent that reports no release')
  t.equal(later.targets.length, 2)
})

t.test('a node silent mid-update past its deadline counts failed', async t => {
  const nodes = fleet(3)
  nodes[0]!.record = record({ state: 'restarting', rollout: 'r1', target: '1.1.0', at: NOW - 3600_000 })
  nodes[0]!.liveness = 'dead'
  t.equal(rolloutStatus(spec({ healthDeadlineSec: 60 }), nodes, NOW).targets[0]!.outcome, 'failed')
})

t.test('targets: labels, loader-managed agents, coordinators and CPUs', async t => {
  const nodes = fleet(4)
  nodes.push({ peer: 'coord', role: 'coordinator', labels: {}, record: record(), liveness: 'alive' })
  nodes.push({ peer: 'plain', role: 'gateway', labels: {}, record: record({ managed: false, reason: 'run from sources' }), liveness: 'alive' })
  nodes.push({ peer: 'old', role: 'gateway', labels: {}, liveness: 'alive', livenessForMs: SETTLE_MS })
  nodes.push({ peer: 'pi', role: 'gateway', labels: {}, record: record({ arch: 'arm64' }), liveness: 'alive' })
  const s = rolloutStatus(spec(), nodes, NOW)
  t.equal(s.targets.length, 4)
  t.same(s.excluded.map(e => e.peer).sort(), ['coord', 'old', 'pi', 'plain'])
  t.equal(s.unmatchedArch, 1)
  t.equal(rolloutStatus(spec({ labels: { site: 'a' } }), nodes, NOW).targets.length, 2, 'labels select')
})

t.test('a node follows the newest rollout that names it; the older one calls it superseded', async t => {
  const older = spec()
  const newer = spec({ id: 'r2', createdAt: new Date(NOW).toISOString(), releases: [{ arch: 'x64', version: '1.2.0', digest: 'b'.repeat(64), size: 9 }] })
  t.equal(rolloutFor([older, newer], { labels: {}, arch: 'x64' })?.id, 'r2')
  t.equal(rolloutFor([older, { ...newer, state: 'aborted' }], { labels: {}, arch: 'x64' })?.id, 'r1', 'not an aborted one')
  t.equal(rolloutFor([older], { labels: {}, arch: 'arm64' }), undefined, 'none for a CPU it has no release for')
  t.equal(rolloutStatus(older, fleet(2), NOW, [newer]).targets[0]!.outcome, 'superseded')
})

t.test('a rollout record is checked field by field', async t => {
  t.throws(() => parseRolloutSpec({ ...spec(), waves: [50, 40, 100] }), { code: 'ERR_ROLLOUT_SPEC', field: 'rollout.waves[1]' })
  t.throws(() => parseRolloutSpec({ ...spec(), waves: [50, 90] }), { code: 'ERR_ROLLOUT_SPEC', field: 'rollout.waves' })
  t.throws(() => parseRolloutSpec({ ...spec(), extra: 1 }), { code: 'ERR_ROLLOUT_SPEC' })
  t.throws(() => parseRolloutSpec({ ...spec(), releases: [spec().releases[0], { ...spec().releases[0], digest: 'c'.repeat(64) }] }), { code: 'ERR_ROLLOUT_SPEC', field: 'rollout.releases[1].arch' })
  t.throws(() => parseRolloutSpec({ ...spec(), releases: [{ ...spec().releases[0], version: '../x' }] }), { code: 'ERR_ROLLOUT_SPEC' })
  t.throws(() => parseRolloutSpec('x'), { code: 'ERR_ROLLOUT_SPEC', field: 'rollout' })
})

t.test('admission: rewrites change state and maxFailures only; new ones need a held release and no silent downgrade', async t => {
  const ctx = { held: () => true, fleet: () => fleet(2) }
  t.doesNotThrow(() => { admitRollout({ ...spec(), state: 'paused' }, spec(), ctx) })
  t.throws(() => { admitRollout({ ...spec(), waves: [100] }, spec(), ctx) }, { code: 'ERR_ROLLOUT_SPEC', field: 'rollout.waves' })
  t.throws(() => { admitRollout({ ...spec(), state: 'active' }, { ...spec(), state: 'aborted' }, ctx) }, { code: 'ERR_ROLLOUT_CONFLICT' })
  t.throws(() => { admitRollout(spec(), undefined, { ...ctx, held: () => false }) }, { code: 'ERR_ROLLOUT_SPEC', field: 'rollout.releases[0].digest' })
  const ahead = { held: () => true, fleet: () => fleet(2).map(n => ({ ...n, record: record({ version: '2.0.0' }) })) }
  t.throws(() => { admitRollout(spec(), undefined, ahead) }, { code: 'ERR_ROLLOUT_SPEC', field: 'rollout.allowDowngrade' })
  t.doesNotThrow(() => { admitRollout(spec({ allowDowngrade: true }), undefined, ahead) })
})

t.test('readFleet: how long each node\'s liveness has held, from membership or (unknown) from when this node started', async t => {
  const entries = ['me', 'up', 'gone', 'never'].map(p => ({ key: `node/${p}`, value: { role: 'gateway' } }))
  const members = [
    { peerId: 'up', state: 'alive', since: NOW - 500_000 },
    { peerId: 'gone', state: 'dead', since: NOW - 7000 },
    { peerId: 'new', state: 'alive', since: NOW - 3000, role: 'gateway' },
    { peerId: 'me', self: true, state: 'alive', since: NOW - 99_000 }
  ] as unknown as Member[]
  const sources = {
    peerId: 'me',
    registry: { list: () => entries, value: () => undefined } as any,
    members: () => members,
    claimsOf: () => ({ role: 'gateway', labels: {} })
  }
  const self = record({ startedAt: NOW - 20_000 })
  t.same(readFleet(sources, self, NOW).map(n => [n.peer, n.liveness, n.livenessForMs]), [['me', 'alive', 20_000], ['up', 'alive', 500_000], ['gone', 'dead', 7000], ['never', 'unknown', 20_000], ['new', 'alive', 3000]], 'a member with no node record here yet is in it too')
})
