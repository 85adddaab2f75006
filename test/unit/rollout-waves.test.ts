import t from 'tap'
import { admitRollout } from '../../node/release/admit.ts'
import { newRolloutSpec, parseRolloutSpec, parseWaves, type RolloutSpec } from '../../node/release/rollout.ts'
import { rank, rolloutFor, rolloutStatus, waveBounds, type FleetNode } from '../../node/release/waves.ts'
import type { ReleaseRecord } from '../../node/release/record.ts'

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
  const s = rolloutStatus(spec(), nodes, NOW)
  t.equal(s.targets[0]!.outcome, 'offline')
  t.equal(s.currentWave, 1)
  for (const n of nodes.slice(1)) n.record = record({ state: 'healthy', version: '1.1.0', rollout: 'r1', healthyAt: NOW - 1000 })
  t.equal(rolloutStatus(spec(), nodes, NOW).phase, 'active', 'waiting for the offline node')
  nodes[0]!.record = record({ state: 'healthy', version: '1.1.0', rollout: 'r1', healthyAt: NOW })
  nodes[0]!.liveness = 'alive'
  t.equal(rolloutStatus(spec(), nodes, NOW).phase, 'done')
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
  nodes.push({ peer: 'old', role: 'gateway', labels: {}, liveness: 'alive' })
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
