import t from 'tap'
import fc from 'fast-check'
import { autoscaleStep, type AutoscaleState } from '../../node/scheduler/autoscale.ts'
import { choosePlacement, type Candidate } from '../../node/scheduler/placement.ts'
import { parseDeploymentSpec } from '../../node/scheduler/spec.ts'
import { activePeriod } from '../../node/scheduler/window.ts'

const node = (peerId: string, extra: Partial<Candidate> = {}): Candidate => ({
  peerId, state: 'alive', role: 'gateway', labels: {}, sensorTypes: [], cpuPct: 10, instances: 0, drained: false, excluded: [], ...extra
})
const spec = (extra: Record<string, unknown> = {}) => parseDeploymentSpec({ id: 'd1', model: { name: 'm', version: '1' }, ...extra })

t.test('deployment specs are validated field by field', async t => {
  const ok = spec()
  t.equal(ok.replicas, 1)
  t.equal(ok.placement.policy, 'least-loaded')
  const bad: Array<[Record<string, unknown>, string]> = [
    [{ id: 'Bad ID' }, 'deployment.id'],
    [{ model: { name: 'm' } }, 'deployment.model'],
    [{ replicas: 0 }, 'deployment.replicas'],
    [{ placement: { policy: 'random' } }, 'deployment.placement.policy'],
    [{ placement: { policy: 'pinned' } }, 'deployment.placement.nodes'],
    [{ window: { start: '2026-01-01T00:00:00Z', end: '2025-01-01T00:00:00Z' } }, 'deployment.window.end'],
    [{ window: { start: 'soon', end: '2025-01-01T00:00:00Z' } }, 'deployment.window.start'],
    [{ schedule: { cron: 'every tuesday', durationSec: 10 } }, 'deployment.schedule.cron'],
    [{ schedule: { cron: '0 * * * *', durationSec: 10, timezone: 'Mars/Olympus' } }, 'deployment.schedule.cron'],
    [{ autoscale: { cpuHighPct: 50, cpuLowPct: 60, maxReplicas: 3 } }, 'deployment.autoscale.cpuLowPct'],
    [{ autoscale: { cpuHighPct: 80, cpuLowPct: 20, minReplicas: 4, maxReplicas: 3 } }, 'deployment.autoscale.maxReplicas'],
    [{ colour: 'red' }, 'deployment.colour']
  ]
  for (const [extra, field] of bad) {
    t.throws(() => parseDeploymentSpec({ id: 'd1', model: { name: 'm', version: '1' }, ...extra }), { code: 'ERR_DEPLOYMENT_SPEC', field }, field)
  }
  t.throws(() => parseDeploymentSpec({ id: 'd', model: { name: 'm', version: '1' }, instance: { x: 1 } }, {
    validateInstance: (_i, root) => { throw Object.assign(new Error(`${root}.x: nope`), { code: 'ERR_INSTANCE_SPEC', field: `${root}.x` }) }
  }), { code: 'ERR_INSTANCE_SPEC', field: 'deployment.instance.x' }, 'the runtime validates the instance part')
})

t.test('placement honours constraints and policies', async t => {
  // peer ids in specs must look like peer ids
  const P = (x: string): string => `12D3KooW${x}xxxxxx`
  const ids = (list: string[]): string[] => list.map(P)
  const nodes = [
    node(P('a'), { labels: { site: 'n' }, sensorTypes: ['temperature'], instances: 2 }),
    node(P('b'), { labels: { site: 'n' }, sensorTypes: ['temperature'] }),
    node(P('c'), { labels: { site: 's' }, sensorTypes: ['door'] }),
    node(P('d'), { role: 'server', labels: { site: 's' }, sensorTypes: ['temperature'] }),
    node(P('e'), { drained: true, sensorTypes: ['temperature'] })
  ]
  t.same(choosePlacement(spec({ placement: { role: 'gateway', sensorTypes: ['temperature'] } }), nodes, [], 1), [P('b')], 'a gateway with the sensor type, least loaded')
  t.same(choosePlacement(spec({ placement: { sensorTypes: ['temperature'] } }), nodes, [], 5), ids(['b', 'd', 'a']), 'never a drained node; as many as qualify')
  t.same(choosePlacement(spec({ placement: { policy: 'pinned', nodes: ids(['c', 'a']) } }), nodes, [], 1), [P('c')], 'pinned in the given order')
  t.same(choosePlacement(spec({ placement: { policy: 'pinned', nodes: ids(['z', 'a']) } }), nodes, [], 2), [P('a')], 'an absent pinned node is not replaced')
  t.same(choosePlacement(spec({ placement: { policy: 'spread' } }), nodes, [], 2).map(id => nodes.find(n => n.peerId === id)!.labels.site).sort(), ['n', 's'], 'spread covers both sites')
  t.same(choosePlacement(spec(), nodes, [P('a')], 1), [P('a')], 'a running replica stays put')
  t.same(choosePlacement(spec(), nodes.filter(n => n.peerId !== P('a')), [P('a')], 1), [P('b')], 'a dead node\'s replica moves')
  t.same(choosePlacement(spec({ placement: { labels: { site: 's' } } }), nodes, [], 3), ids(['c', 'd']))
  const suspect = [node(P('x'), { state: 'suspect' }), node(P('y'))]
  t.same(choosePlacement(spec(), suspect, [P('x')], 1), [P('x')], 'a suspect node keeps its replica')
  t.same(choosePlacement(spec(), suspect, [], 2), [P('y')], 'but gets no new ones')
  t.same(choosePlacement(spec(), [node(P('q'), { excluded: ['d1'] })], [], 1), [], 'an operator exclusion holds')
  fc.assert(fc.property(fc.array(fc.record({ id: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), instances: fc.nat(5), cpu: fc.nat(100) }), { maxLength: 6 }), fc.nat(6), (list, replicas) => {
    const cands = [...new Map(list.map(l => [l.id, node(l.id, { instances: l.instances, cpuPct: l.cpu })])).values()]
    const chosen = choosePlacement(spec(), cands, [], Math.max(1, replicas))
    return new Set(chosen).size === chosen.length && chosen.length === Math.min(Math.max(1, replicas), cands.length)
  }))
  t.pass('never the same node twice, always as many as asked and available')
})

t.test('autoscaling needs a sustained signal, respects bounds and cools down', async t => {
  const a = { cpuHighPct: 70, cpuLowPct: 20, minReplicas: 1, maxReplicas: 3, cooldownSec: 30, sustainSec: 5 }
  let s: AutoscaleState = { replicas: 1, changedAt: 0 }
  let now = 100_000
  s = autoscaleStep(a, s, 90, now)
  t.equal(s.replicas, 1, 'not on the first hot sample')
  now += 6000
  s = autoscaleStep(a, s, 90, now)
  t.equal(s.replicas, 2, 'up after 5 s above the mark')
  now += 6000
  s = autoscaleStep(a, s, 95, now)
  t.equal(s.replicas, 2, 'cooldown holds the next step')
  now += 30_000
  s = autoscaleStep(a, s, 95, now)
  now += 6000
  s = autoscaleStep(a, s, 95, now)
  t.equal(s.replicas, 3)
  now += 60_000
  s = autoscaleStep(a, s, 99, now)
  now += 6000
  s = autoscaleStep(a, s, 99, now)
  t.equal(s.replicas, 3, 'never past maxReplicas')
  now += 1000
  s = autoscaleStep(a, s, 50, now)
  now += 60_000
  s = autoscaleStep(a, s, 50, now)
  t.equal(s.replicas, 3, 'between the marks nothing changes (hysteresis)')
  s = autoscaleStep(a, s, 5, now)
  now += 6000
  s = autoscaleStep(a, s, 5, now)
  t.equal(s.replicas, 2, 'down after 5 s below the low mark')

  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 20_000 })), { maxLength: 300 }), samples => {
    let st: AutoscaleState = { replicas: 1, changedAt: 0 }
    let clock = 1_000_000
    let lastChange = -Infinity
    for (const [cpu, dt] of samples) {
      clock += dt
      const next = autoscaleStep(a, st, cpu, clock)
      if (next.replicas !== st.replicas) {
        if (clock - lastChange < a.cooldownSec * 1000) return false
        if (Math.abs(next.replicas - st.replicas) !== 1) return false
        lastChange = clock
      }
      if (next.replicas < a.minReplicas || next.replicas > a.maxReplicas) return false
      st = next
    }
    return true
  }))
  t.pass('any load trace: one step at a time, within bounds, never inside the cooldown')
})

t.test('windows and recurring schedules', async t => {
  const w = { window: { start: '2026-11-25T10:00:00Z', end: '2026-11-25T11:00:00Z' } }
  t.same(activePeriod(w, Date.parse('2026-11-25T09:59:59Z')), { active: false, nextChange: Date.parse('2026-11-25T10:00:00Z') })
  t.same(activePeriod(w, Date.parse('2026-11-25T10:00:00Z')), { active: true, nextChange: Date.parse('2026-11-25T11:00:00Z') })
  t.same(activePeriod(w, Date.parse('2026-11-25T11:00:00Z')), { active: false, nextChange: null }, 'the end is exclusive')
  const s = { schedule: { cron: '0 8 * * *', durationSec: 3600, timezone: 'UTC' } }
  t.same(activePeriod(s, Date.parse('2026-11-25T08:30:00Z')), { active: true, nextChange: Date.parse('2026-11-25T09:00:00Z') })
  t.same(activePeriod(s, Date.parse('2026-11-25T09:00:00Z')), { active: false, nextChange: Date.parse('2026-11-26T08:00:00Z') })
  t.same(activePeriod(s, Date.parse('2026-11-25T08:00:00Z')).active, true, 'active from the occurrence itself')
  const tz = { schedule: { cron: '0 8 * * *', durationSec: 60, timezone: 'Europe/Berlin' } }
  t.equal(activePeriod(tz, Date.parse('2026-11-25T07:00:30Z')).active, true, '08:00 in Berlin is 07:00 UTC in November')
  t.same(activePeriod({}, 0), { active: true, nextChange: null }, 'no window: always')
})
