import { closeSync, existsSync, openSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { RUNTIME_FILE } from '../../node/agent.ts'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { start } from '../helpers/processes.ts'
import { deploy, publishAnomalyBundle, runningOn } from '../helpers/scheduling.ts'

// Issue 14, clock skew on the scheduling side: a gateway whose clock is a
// year behind refuses every entry its peers send (they are a year in its
// future), so it never learns of a deployment placed on it. Placed there, the
// instance would stay pending forever; instead the scheduler places it
// elsewhere once the node has shown no progress for `progressDeadlineSec`
// (or never places it there, when membership already reports its clock
// skewed).

// Debian's faketime (in .ci/run's DEBIAN_PACKAGES)
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'
if (!existsSync(LIBFAKETIME)) throw new Error(`${LIBFAKETIME} is missing: install Debian's faketime package`)

const DEADLINE_SEC = 10
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const config = { scheduler: { progressDeadlineSec: DEADLINE_SEC } }
await cluster.addNode('s1', { role: 'server', config })
await cluster.addNode('g1', { config })
const late = await cluster.addNode('g2', { config })
await cluster.start('s1')
await cluster.start('g1')
await waitFor(async () => (await cluster.get('g1', '/v1/scheduler')).leader === cluster.node('s1').peerId, 'g1 to follow s1', 90_000, 500)

// the gateway a year behind: started as Cluster starts agents, under libfaketime (wall clock only)
await rm(join(late.dir, RUNTIME_FILE), { force: true })
const err = openSync(join(late.dir, 'stderr.log'), 'a')
try {
  late.startedAt = performance.now()
  late.process = start(cluster.command.exec, [...cluster.command.args, 'agent', '--data', late.dir], {
    name: 'agent g2 (a year behind)',
    stdio: ['ignore', 'ignore', err],
    env: { ...cluster.command.env, LD_PRELOAD: LIBFAKETIME, FAKETIME: '-365d', FAKETIME_DONT_FAKE_MONOTONIC: '1' }
  })
  late.child = late.process.child
} finally {
  closeSync(err)
}
await cluster.waitReady('g2')
await waitFor(async () => (await cluster.members('s1')).get(late.peerId)?.state === 'alive', 's1 to hear the late gateway', 90_000, 500)

await publishAnomalyBundle(cluster, 's1')

// in a subtest: with a root teardown, tap ends the root test once it has been idle after an assertion
await t.test('a gateway a year behind is placed around', async t => {
  // g1 drained, so the late gateway is the only place for the deployment (unless membership already calls it skewed)
  t.equal((await cluster.request('g1', 'POST', '/v1/drain')).status, 200, 'g1 drained')
  await deploy(cluster, 's1', { id: 'sk', model: { name: 'anomaly', version: '1.0.0' }, placement: { role: 'gateway' } })
  const placedAt = Date.now()
  const first = await waitFor(async () => (await cluster.get('s1', '/v1/deployments/sk')).placement, 'a placement for sk', 30_000, 250).catch(() => null)
  const onLate = first?.nodes.includes(late.peerId) === true
  t.comment(onLate ? 'placed on the late gateway first' : 'never placed on the late gateway (membership reports its clock skewed)')
  if (onLate) {
    // the deadline passes with no progress from it: placed around (no other gateway yet: placed nowhere)
    // two ways off it: the progress deadline, or membership measuring its clock
    // (acks carry the clock; on a busy machine that can come after the first
    // placement): note when s1 first reports it skewed, polled before the placement
    let skewedAfter: number | undefined
    await waitFor(async () => {
      const member = (await cluster.members('s1') as Map<string, { clockSkewed?: boolean }>).get(late.peerId)
      if (member?.clockSkewed === true) skewedAfter ??= Date.now() - placedAt
      return (await cluster.get('s1', '/v1/deployments/sk')).placement?.nodes.includes(late.peerId) === false
    }, 'the scheduler to give up on the late gateway', 90_000, 250)
    const movedAfter = Date.now() - placedAt
    t.ok(movedAfter >= DEADLINE_SEC * 1000 || skewedAfter != null, `placed around after ${movedAfter} ms: ${skewedAfter != null ? `membership reported its clock skewed first (${skewedAfter} ms)` : `not before the ${DEADLINE_SEC} s deadline`}`)
  }
  t.equal((await cluster.request('g1', 'POST', '/v1/undrain')).status, 200, 'g1 undrained')
  await waitFor(async () => (await runningOn(cluster, 's1', 'sk')).join() === 'g1', 'sk to run on g1', 120_000, 500)
  const placement = (await cluster.get('s1', '/v1/deployments/sk')).placement
  t.same(placement.nodes, [cluster.node('g1').peerId], 'sk is placed on g1 alone')
  t.equal((await cluster.members('s1')).get(late.peerId)?.state, 'alive', 'the late gateway is still a live member: it was placed around, not dropped')
  const seen = await cluster.get('g2', '/v1/deployments')
  t.notOk(seen.deployments.some((d: { id: string }) => d.id === 'sk'), 'the late gateway never learnt of the deployment: it refuses its peers\' writes')
})
