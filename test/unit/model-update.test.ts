import t from 'tap'
import { bundleFor, canaryCount, parseModelUpdate, stepUpdate, type ModelUpdate, type NodeReport, type UpdateDecision, type UpdateInput } from '../../node/scheduler/model-update.ts'
import { parseDeploymentSpec } from '../../node/scheduler/spec.ts'

const V1 = '1'.repeat(64)
const V2 = '2'.repeat(64)
const V3 = '3'.repeat(64)
const VERSIONS: Record<string, string> = { [V1]: '1.0.0', [V2]: '2.0.0', [V3]: '3.0.0' }
const NODES = ['a', 'b', 'c']
const TS: [number, number] = [1000, 0]

/**
 * A fleet the state machine drives: each node runs what its placement says
 * once `available` lets it (as the reconciler's hot swap does), and reports
 * like its instance entry would.
 */
class Fleet {
  runs = new Map<string, string>(NODES.map(n => [n, V1]))
  failed = new Map<string, { bundle: string, reason: string, at: number }>()
  predicts = new Map<string, { ok: number, errors: number }>()
  /** bundles that fail to start */
  broken = new Set<string>()
  placement: { bundle: string, update?: ModelUpdate } = { bundle: V1 }
  now = 10_000

  report = (node: string): NodeReport => ({
    ...(this.runs.has(node) ? { running: this.runs.get(node)! } : {}),
    ...(this.failed.has(node) ? { failed: this.failed.get(node)! } : {}),
    ...(this.predicts.has(node) ? { predicts: this.predicts.get(node)! } : {})
  })

  /** One scheduler pass, then every node acts on the placement (through JSON, as the registry carries it). */
  step (target: string, spec: UpdateInput['spec'] = {}, options: { nodes?: string[], ts?: [number, number], active?: boolean, act?: boolean } = {}): UpdateDecision {
    const d = stepUpdate({
      previous: this.placement,
      target,
      version: b => VERSIONS[b],
      deploymentTs: options.ts ?? TS,
      nodes: options.nodes ?? NODES,
      active: options.active ?? true,
      spec,
      report: this.report,
      now: this.now
    })
    this.placement = JSON.parse(JSON.stringify({ bundle: d.bundle, ...(d.update == null ? {} : { update: d.update }) }))
    if (options.act !== false) this.act(options.nodes ?? NODES)
    this.now += 1000
    return d
  }

  act (nodes: string[]): void {
    for (const n of nodes) {
      const want = bundleFor(this.placement, n)
      if (this.runs.get(n) === want) continue
      if (this.broken.has(want)) {
        // a failed hot swap: the old instance runs on
        this.failed.set(n, { bundle: want, reason: 'model failed to load', at: this.now })
        continue
      }
      this.runs.set(n, want)
      this.predicts.delete(n)
    }
  }

  /** running instances per bundle */
  counts (): Record<string, number> {
    const out: Record<string, number> = {}
    for (const b of this.runs.values()) out[VERSIONS[b]!] = (out[VERSIONS[b]!] ?? 0) + 1
    return out
  }
}

t.test('the first placement has nothing to update', async t => {
  const d = stepUpdate({ previous: undefined, target: V1, version: () => undefined, deploymentTs: TS, nodes: NODES, active: true, spec: {}, report: () => ({}), now: 0 })
  t.same(d, { bundle: V1 })
})

t.test('without a canary, nodes switch one at a time, each only once the previous is AVAILABLE', async t => {
  const f = new Fleet()
  const switched: number[] = []
  for (let i = 0; i < 10 && f.placement.update?.phase !== 'succeeded'; i++) {
    f.step(V2)
    switched.push([...f.runs.values()].filter(b => b === V2).length)
  }
  t.same(switched, [1, 2, 3, 3], 'one more node per pass, then the update settles')
  t.equal(f.placement.bundle, V2)
  t.equal(f.placement.update?.phase, 'succeeded')
  t.same(f.placement.update?.history.map(h => [h.version, h.outcome]), [['2.0.0', 'succeeded']])
  t.same(f.placement.update?.updated, [], 'no per-node state once settled')
  t.same(f.counts(), { '2.0.0': 3 })
  const again = f.step(V2)
  t.equal(again.event, undefined, 'a settled update does nothing more')
})

t.test('a node slow to load holds the next step back', async t => {
  const f = new Fleet()
  f.step(V2, {}, { act: false })
  t.same(f.placement.update?.updated.map(x => x.node), ['a'])
  f.step(V2, {}, { act: false })
  t.same(f.placement.update?.updated.map(x => x.node), ['a'], 'b waits for a to be AVAILABLE')
  f.act(NODES)
  f.step(V2)
  t.same(f.placement.update?.updated.map(x => x.node), ['a', 'b'])
})

t.test('a canary runs for its duration beside the old version before the rest follow', async t => {
  const f = new Fleet()
  const spec = { canary: { percent: 34, durationSec: 5 } }
  t.equal(f.step(V2, spec).event, 'model update started')
  t.equal(f.placement.update?.phase, 'canary')
  t.equal(f.placement.update?.canary, 2, '34% of 3 rounds up to 2')
  f.step(V2, spec)
  t.same(f.counts(), { '1.0.0': 1, '2.0.0': 2 }, 'two canaries')
  t.equal(f.step(V2, spec).event, 'canary AVAILABLE: watching it')
  const watchFrom = f.placement.update!.canaryAt!
  while (f.now - watchFrom < 5000) {
    f.step(V2, spec)
    t.equal(f.placement.update?.phase, 'canary', `still watching at +${f.now - watchFrom - 1000} ms`)
    t.same(f.counts(), { '1.0.0': 1, '2.0.0': 2 })
  }
  t.equal(f.step(V2, spec).event, 'canary passed')
  t.equal(f.placement.update?.phase, 'rolling')
  t.ok(f.placement.update?.canaryPassedAt != null)
  f.step(V2, spec)
  t.equal(f.placement.update?.phase, 'succeeded')
  t.same(f.counts(), { '2.0.0': 3 })
})

t.test('a new version that fails to load rolls back and is not retried until the deployment is written again', async t => {
  const f = new Fleet()
  for (let i = 0; i < 5; i++) f.step(V2)
  t.equal(f.placement.bundle, V2)
  f.broken.add(V3)
  f.step(V3)
  t.same(f.counts(), { '2.0.0': 3 }, 'the old instance keeps running where the new one failed')
  const d = f.step(V3)
  t.equal(d.event, 'model update rolled back')
  t.equal(f.placement.bundle, V2)
  t.equal(f.placement.update?.phase, 'rolled-back')
  t.match(f.placement.update?.reason, /the new instance on a failed: model failed to load/)
  t.same(f.placement.update?.history.map(h => [h.version, h.outcome]), [['2.0.0', 'succeeded'], ['3.0.0', 'rolled-back']])
  for (let i = 0; i < 3; i++) t.equal(f.step(V3).event, undefined, 'the same deployment entry does not try v3 again')
  t.equal(f.placement.update?.updated.length, 0)
  f.broken.delete(V3)
  f.failed.clear()
  t.equal(f.step(V3, {}, { ts: [2000, 0] }).event, 'model update started', 'written again, v3 is tried again')
})

t.test('a failure reported before the node was switched does not count', async t => {
  const f = new Fleet()
  f.failed.set('a', { bundle: V2, reason: 'an old attempt', at: 1 })
  f.step(V2)
  t.equal(f.step(V2).event, 'update step')
  t.equal(f.placement.update?.phase, 'rolling')
})

t.test('a canary that crashes after it became AVAILABLE rolls back everything it switched', async t => {
  const f = new Fleet()
  const spec = { canary: { replicas: 1, durationSec: 60 } }
  f.step(V2, spec)
  f.step(V2, spec)
  t.equal(f.placement.update?.canaryAt != null, true)
  // its worker dies on every predict
  f.predicts.set('a', { ok: 3, errors: 30 })
  const d = f.step(V2, spec)
  t.equal(d.event, 'model update rolled back')
  t.match(f.placement.update?.reason, /predict error rate 90\.9% over 33 predicts passed maxErrorPct 5%/)
  t.same(f.counts(), { '1.0.0': 3 }, 'the canary went back to v1')
})

t.test('the error rate is judged only past minPredicts, against maxErrorPct', async t => {
  const f = new Fleet()
  const spec = { canary: { replicas: 1, durationSec: 60 }, update: { maxErrorPct: 20, minPredicts: 10, availableTimeoutSec: 300 } }
  f.step(V2, spec)
  f.predicts.set('a', { ok: 0, errors: 9 })
  f.step(V2, spec)
  t.equal(f.placement.update?.phase, 'canary', '9 predicts are too few to judge')
  f.predicts.set('a', { ok: 40, errors: 10 })
  f.step(V2, spec)
  t.equal(f.placement.update?.phase, 'canary', '20% is not past 20%')
  f.predicts.set('a', { ok: 40, errors: 11 })
  f.step(V2, spec)
  t.equal(f.placement.update?.phase, 'rolled-back')
})

t.test('an instance never AVAILABLE within the deadline rolls back', async t => {
  const f = new Fleet()
  const spec = { update: { maxErrorPct: 5, minPredicts: 20, availableTimeoutSec: 5 } }
  f.step(V2, spec, { act: false })
  for (let i = 0; i < 5; i++) {
    f.step(V2, spec, { act: false })
    t.equal(f.placement.update?.phase, 'rolling')
  }
  f.step(V2, spec, { act: false })
  t.equal(f.placement.update?.phase, 'rolled-back')
  t.match(f.placement.update?.reason, /on a was not AVAILABLE within 5 s/)
})

t.test('a scheduler that takes over resumes the update from the placement alone', async t => {
  const f = new Fleet()
  const spec = { canary: { replicas: 1, durationSec: 3 } }
  f.step(V2, spec)
  f.step(V2, spec)
  const watching = f.placement.update!.canaryAt!
  // another scheduler: nothing but the registry's placement (already through JSON) and the reports
  f.now += 1000
  f.step(V2, spec)
  t.equal(f.placement.update?.canaryAt, watching, 'the canary watch keeps its start: it is not restarted')
  for (let i = 0; i < 6; i++) f.step(V2, spec)
  t.equal(f.placement.update?.phase, 'succeeded')
  t.same(f.counts(), { '2.0.0': 3 })
})

t.test('a new version asked for mid-update supersedes the one in progress', async t => {
  const f = new Fleet()
  f.step(V2)
  f.step(V2)
  t.same(f.counts(), { '1.0.0': 1, '2.0.0': 2 })
  const d = f.step(V1)
  t.equal(d.event, 'model update superseded')
  t.equal(f.placement.update?.phase, 'superseded')
  t.same(f.counts(), { '1.0.0': 3 }, 'back to the version asked for')
  f.step(V3)
  t.equal(f.placement.update?.from, V1)
  t.same(f.placement.update?.history.map(h => h.outcome), ['superseded', 'in-progress'])
})

t.test('outside its window, the new version is simply what the next instances start', async t => {
  const f = new Fleet()
  const d = f.step(V2, {}, { active: false })
  t.equal(d.bundle, V2)
  t.equal(f.placement.update?.phase, 'succeeded')
  t.match(f.placement.update?.history[0]?.reason, /applied at once/)
})

t.test('a node lost mid-update leaves it; its replacement is switched in turn', async t => {
  const f = new Fleet()
  f.step(V2)
  f.step(V2)
  const nodes = ['b', 'c', 'd']
  f.runs.delete('a')
  f.runs.set('d', V1)
  f.step(V2, {}, { nodes })
  t.same(f.placement.update?.updated.map(x => x.node), ['b', 'c'])
  f.step(V2, {}, { nodes })
  t.same(f.placement.update?.updated.map(x => x.node), ['b', 'c', 'd'])
  f.step(V2, {}, { nodes })
  t.equal(f.placement.update?.phase, 'succeeded')
  t.same(f.counts(), { '2.0.0': 3 })
})

t.test('history is bounded', async t => {
  const f = new Fleet()
  for (let i = 0; i < 15; i++) f.step(i % 2 === 0 ? V2 : V1, {}, { active: false })
  t.equal(f.placement.update?.history.length, 10)
})

t.test('canary sizes', async t => {
  t.equal(canaryCount(undefined, 5), 0)
  t.equal(canaryCount({ replicas: 2, durationSec: 1 }, 5), 2)
  t.equal(canaryCount({ replicas: 9, durationSec: 1 }, 5), 5, 'never more than the nodes')
  t.equal(canaryCount({ percent: 10, durationSec: 1 }, 5), 1, 'at least one')
  t.equal(canaryCount({ percent: 50, durationSec: 1 }, 5), 3)
})

t.test('a placement\'s update is checked before it is read', async t => {
  t.equal(parseModelUpdate({ from: V1, to: V2, phase: 'exploded', updated: [], canary: 0, history: [], deploymentTs: TS }), undefined)
  t.equal(parseModelUpdate({ from: V1, to: V2, phase: 'rolling', updated: [{ node: 1 }], canary: 0, history: [], deploymentTs: TS }), undefined)
  t.equal(parseModelUpdate({ from: V1, to: V2, phase: 'rolling', updated: [], canary: 0, history: new Array(11).fill({}), deploymentTs: TS }), undefined)
  t.equal(parseModelUpdate({ from: V1, to: V2, phase: 'rolling', updated: [], canary: 0, history: [{ bundle: V1 }], deploymentTs: TS }), undefined)
  t.ok(parseModelUpdate({ from: V1, to: V2, phase: 'rolling', updated: [{ node: 'a', at: 1 }], canary: 0, history: [{ bundle: V2, outcome: 'in-progress', startedAt: 1 }], deploymentTs: TS }))
})

t.test('canary and update fields are validated, naming the field', async t => {
  const base = { id: 'd', model: { name: 'm', version: '1' } }
  const fieldOf = (spec: unknown): string | undefined => { try { parseDeploymentSpec(spec); return undefined } catch (err: any) { return err.field } }
  t.equal(fieldOf({ ...base, canary: { durationSec: 10 } }), 'deployment.canary', 'replicas or percent is needed')
  t.equal(fieldOf({ ...base, canary: { replicas: 1, percent: 10, durationSec: 10 } }), 'deployment.canary', 'not both')
  t.equal(fieldOf({ ...base, canary: { percent: 101 } }), 'deployment.canary.percent')
  t.equal(fieldOf({ ...base, canary: { replicas: 0 } }), 'deployment.canary.replicas')
  t.equal(fieldOf({ ...base, canary: { replicas: 1, durationSec: -1 } }), 'deployment.canary.durationSec')
  t.equal(fieldOf({ ...base, canary: { replicas: 1, soon: true } }), 'deployment.canary.soon')
  t.equal(fieldOf({ ...base, update: { maxErrorPct: 101 } }), 'deployment.update.maxErrorPct')
  t.equal(fieldOf({ ...base, update: { availableTimeoutSec: 1 } }), 'deployment.update.availableTimeoutSec')
  t.equal(fieldOf({ ...base, update: { minPredicts: 0 } }), 'deployment.update.minPredicts')
  const spec = parseDeploymentSpec({ ...base, canary: { replicas: 1 }, update: {} })
  t.same(spec.canary, { replicas: 1, durationSec: 60 }, 'durationSec defaults to 60')
  t.same(spec.update, { maxErrorPct: 5, minPredicts: 20, availableTimeoutSec: 300 }, 'update defaults')
})
