import { join } from 'node:path'
import t from 'tap'
import { budget } from '../helpers/budget.ts'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { deploy, publishAnomalyBundle } from '../helpers/scheduling.ts'
import { temperatures, SCALE } from '../helpers/anomaly-bundle.ts'

// three agents, no coordinator while the model is updated (one joins at the end to show the status)
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
const names = ['s1', 'g1', 'g2']
await cluster.addNode('s1', { role: 'server' })
for (const g of ['g1', 'g2']) await cluster.addNode(g)
await Promise.all(names.map(async n => await cluster.start(n)))
await waitFor(async () => {
  const views = await Promise.all(names.map(async n => await cluster.members(n)))
  return views.every(v => [...v.values()].filter(m => m.state === 'alive').length === names.length)
}, 'all three alive everywhere', 60_000)

const digests = {
  v1: await publishAnomalyBundle(cluster, 's1', { version: '1.0.0' }),
  v2: await publishAnomalyBundle(cluster, 'g1', { version: '2.0.0' }),
  // the manifest declares an output the model does not have: every instance of it fails to load
  v3: await publishAnomalyBundle(cluster, 'g2', { version: '3.0.0', outputs: [{ name: 'class', dtype: 'int32', shape: [-1, 3] }] })
}
const versionOf = new Map(Object.entries(digests).map(([v, d]) => [d, v]))

const spec = (version: string): Record<string, unknown> => ({
  id: 'roll',
  model: { name: 'anomaly', version },
  replicas: 2,
  placement: { policy: 'spread' },
  canary: { replicas: 1, durationSec: 4 },
  // generous on a busy machine: a load takes a few seconds here, minutes never
  update: { availableTimeoutSec: Math.ceil(budget(120_000) / 1000) },
  instance: { name: 'roll' }
})
const status = async (via = 's1'): Promise<any> => await cluster.get(via, '/v1/deployments/roll')
const running = (s: any): Array<{ node: string, version?: string }> => s.instances.filter((i: any) => i.state === 'running')

/**
 * A client predicting without pause, through each agent in turn (the ones
 * running a replica answer locally, the other forwards over the mesh);
 * every answer that is not a 200 with one prediction is a failure.
 */
class Client {
  ok = 0
  failures: string[] = []
  #stopped = false
  #done: Promise<void>

  constructor () {
    this.#done = this.#loop()
  }

  async #loop (): Promise<void> {
    const body = JSON.stringify({ instances: [temperatures(21).map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))] })
    for (let i = 0; !this.#stopped; i++) {
      const via = names[i % names.length]!
      try {
        const res = await fetch(`${cluster.node(via).api}/v1/models/roll:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(budget(30_000)) })
        const answer = await res.json() as any
        if (res.status === 200 && answer.predictions?.length === 1) this.ok++
        else this.failures.push(`${via}: ${res.status} ${JSON.stringify(answer).slice(0, 200)}`)
      } catch (err: any) {
        this.failures.push(`${via}: ${err.message}`)
      }
    }
  }

  async stop (): Promise<void> {
    this.#stopped = true
    await this.#done
  }
}

await t.test('v1 runs on two nodes', async t => {
  await deploy(cluster, 'g2', spec('1.0.0'))
  const s = await waitFor(async () => { const s = await status(); return running(s).length === 2 ? s : null }, 'two replicas of v1', budget(90_000))
  t.same(running(s).map(i => i.version), ['1.0.0', '1.0.0'])
  t.equal(s.update, null, 'no update yet')
})

await t.test('a rolling update to v2 with a canary: no predict fails, v2 serves at the end, no more instances than asked', async t => {
  const client = new Client()
  t.teardown(async () => { await client.stop() })
  await waitFor(() => client.ok >= 5, 'the client to be predicting', budget(30_000))
  await deploy(cluster, 'g1', spec('2.0.0'))
  const seen = new Set<string>()
  let most = 0
  const done = await waitFor(async () => {
    const s = await status()
    if (s.update != null) seen.add(`${s.update.phase}/${s.update.canary.state}`)
    // old and new side by side on the node being switched: one extra at most
    const entries = await cluster.get('g2', '/v1/registry?prefix=instance/')
    const live = (entries.entries as Array<{ key: string, value: any }>).filter(e => e.key.endsWith('/roll') && e.value?.state === 'running')
    most = Math.max(most, live.length + live.filter(e => e.value.next?.state === 'starting').length)
    return s.update?.phase === 'succeeded' && running(s).length === 2 && running(s).every(i => i.version === '2.0.0') ? s : null
  }, 'the update to v2 to succeed', budget(240_000), 250)
  await client.stop()
  t.same(client.failures, [], `zero failed predicts (${client.ok} answered)`)
  t.ok(client.ok > 20, `the client kept predicting through the update (${client.ok})`)
  t.ok(seen.has('canary/watching'), `the canary was watched before the rest followed (${[...seen].join(', ')})`)
  t.ok(most <= 3, `never more than one instance beyond the two asked (${most} at most)`)
  t.match(done.update, { phase: 'succeeded', from: { bundle: digests.v1, version: '1.0.0' }, to: { bundle: digests.v2, version: '2.0.0' }, canary: { replicas: 1, state: 'passed' } })
  t.same(done.update.history.map((h: any) => [h.version, h.outcome]), [['2.0.0', 'succeeded']])
  t.equal(done.placement.bundle, digests.v2)
  t.equal(done.running, 2, 'two running once settled')
  for (const n of names) {
    const local = await fetch(`${cluster.node(n).api}/v1/models/roll`).then(async r => await r.json() as any)
    t.ok(local.model_version_status.every((v: any) => v.version === '2.0.0'), `${n} reports only v2`)
  }
})

await t.test('a v3 that fails to load rolls back to v2 by itself, and the status says why', async t => {
  const client = new Client()
  t.teardown(async () => { await client.stop() })
  await waitFor(() => client.ok >= 5, 'the client to be predicting', budget(30_000))
  await deploy(cluster, 's1', spec('3.0.0'))
  const back = await waitFor(async () => { const s = await status('g1'); return s.update?.phase === 'rolled-back' ? s : null }, 'v3 to be rolled back', budget(240_000), 250)
  await client.stop()
  t.same(client.failures, [], `zero failed predicts while v3 failed (${client.ok} answered)`)
  t.match(back.update, { phase: 'rolled-back', from: { version: '2.0.0' }, to: { version: '3.0.0' }, canary: { state: 'failed' } })
  t.match(back.update.reason, /the new instance on .* failed: .*manifest does not describe the model/, `the reason: ${back.update.reason}`)
  t.same(back.update.history.map((h: any) => [h.version, h.outcome]), [['2.0.0', 'succeeded'], ['3.0.0', 'rolled-back']])
  t.equal(back.placement.bundle, digests.v2)
  const settled = await waitFor(async () => { const s = await status(); return running(s).length === 2 ? s : null }, 'two replicas', budget(30_000))
  t.same(running(settled).map(i => i.version), ['2.0.0', '2.0.0'], 'v2 runs on both')
  t.ok(settled.instances.some((i: any) => i.next?.state === 'failed' && i.next.version === '3.0.0'), 'the node that tried v3 says it failed')
  await new Promise(resolve => setTimeout(resolve, budget(5000)))
  const later = await status('g2')
  t.equal(later.update.phase, 'rolled-back', 'v3 is not tried again')
  t.equal(running(later).length, 2, 'still two running')
  t.ok(running(later).every(i => versionOf.get((i as any).bundle) === 'v2'), 'on the v2 bundle')
})

await t.test('the coordinator shows the update and its history', async t => {
  coordinator.init.bootstrap = [cluster.node('s1').multiaddr]
  await coordinator.start()
  const token = await coordinator.login('admin', coordinator.printedPassword()!)
  const view = await waitFor(async () => {
    const res = await coordinator.request('GET', '/api/v1/deployments/roll', { token })
    return res.status === 200 && res.body.update != null ? res.body : null
  }, 'the coordinator to show roll with its update', budget(60_000))
  t.match(view.update, { phase: 'rolled-back', to: { version: '3.0.0' }, canary: { state: 'failed' } })
  t.same(view.update.history.map((h: any) => h.outcome), ['succeeded', 'rolled-back'])
  t.ok(view.instances.every((i: any) => i.state !== 'running' || i.version === '2.0.0'), 'instances with their versions')
})

await t.test('a scheduler killed during the canary: its successor resumes the update from the placement', async t => {
  const leaderOf = async (via: string): Promise<{ leader: string | null, term: number | null }> => await cluster.get(via, '/v1/scheduler')
  const old = await waitFor(async () => {
    const views = await Promise.all(names.map(async n => await leaderOf(n)))
    return views[0]!.leader != null && views.every(v => v.leader === views[0]!.leader && v.term === views[0]!.term) ? views[0]! : null
  }, 'one scheduler seen by all', budget(60_000))
  const gone = [...cluster.nodes.values()].find(n => n.peerId === old.leader)!.name
  // back to v1, with a canary long enough to kill its scheduler while it is watched
  await deploy(cluster, gone, { ...spec('1.0.0'), canary: { replicas: 1, durationSec: Math.ceil(budget(15_000) / 1000) } })
  const watching = await waitFor(async () => { const s = await status(gone); return s.update?.phase === 'canary' && s.update.canary.state === 'watching' ? s : null }, 'the v1 canary to be watched', budget(120_000), 250)
  t.equal(watching.placement.scheduler, old.leader, `the canary was started by ${gone}`)
  const killedAt = Date.now()
  cluster.kill(gone)
  const survivors = names.filter(n => n !== gone)
  const done = await waitFor(async () => {
    const s = await status(survivors[0])
    const settled = s.update?.phase === 'succeeded' && s.update.to.version === '1.0.0' && !s.placement.nodes.includes(cluster.node(gone).peerId)
    return settled && running(s).length === 2 && running(s).every(i => i.version === '1.0.0') ? s : null
  }, 'the update to v1 to succeed under the new scheduler', budget(240_000), 250)
  t.not(done.placement.scheduler, old.leader, 'a new scheduler finished it')
  t.ok(done.placement.term > (old.term ?? 0), `with a higher term (${String(old.term)} → ${String(done.placement.term)})`)
  const tries = done.update.history.filter((h: any) => h.version === '1.0.0')
  t.equal(tries.length, 1, 'one attempt at v1: resumed, not started over')
  t.equal(tries[0].outcome, 'succeeded')
  t.ok(tries[0].startedAt < killedAt, 'the attempt the new scheduler finished is the one the old one began')
  t.same(done.update.history.map((h: any) => h.outcome), ['succeeded', 'rolled-back', 'succeeded'])
  t.equal(done.running, 2, 'two running once settled')
  t.notOk(running(done).some(i => i.node === cluster.node(gone).peerId), 'none on the dead node')
})
