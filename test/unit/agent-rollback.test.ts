import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Agent } from '../../node/agent.ts'
import { initFleet } from '../../node/identity/fleet.ts'
import { initNodeDir } from '../../node/identity/node-dir.ts'
import { freePort } from '../helpers/ports.ts'

// A real agent in this process (its registry, membership, runtime, bundles,
// scheduling in one libp2p node) whose election refuses to start: the start
// fails, every service that had started is stopped, those after the failed
// one never start, and once the agent is stopped no handle is left open.

const count = (): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1
  return out
}

t.test('a service that fails to start: the agent stops what started and leaks nothing', async t => {
  const root = await mkdtemp(join(tmpdir(), 'gatemesh-rollback-'))
  t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
  const fleetDir = join(root, 'fleet')
  await initFleet(fleetDir)
  const dir = join(root, 'node')
  const meshPort = await freePort()
  await initNodeDir(dir, { fleetDir, role: 'gateway', labels: {}, listen: [`/ip4/127.0.0.1/tcp/${meshPort}`], apiPort: await freePort(), config: { logs: { stdout: false, level: 'fatal' }, mdns: false } })
  const before = count()
  const agent = await Agent.create(dir)

  const calls: string[] = []
  const spy = (name: string, part: { start: () => Promise<void>, stop: () => Promise<void> }): void => {
    const { start, stop } = part
    part.start = async () => { calls.push(`${name} start`); await start.call(part) }
    part.stop = async () => { calls.push(`${name} stop`); await stop.call(part) }
  }
  spy('local', agent.local)
  spy('health', agent.health)
  spy('connector', agent.connector)
  spy('bundles', agent.bundles)
  spy('releases', agent.releases)
  spy('renewal', agent.renewal)
  agent.scheduling.election.start = async () => { throw new Error('the election refuses to start') }

  await t.rejects(agent.start(), { message: 'the election refuses to start' })
  t.equal(agent.mesh.status, 'stopped', 'the node stopped')
  for (const name of ['local', 'health', 'connector', 'bundles']) {
    t.ok(calls.includes(`${name} start`) && calls.includes(`${name} stop`), `${name} started and was stopped`)
    t.ok(calls.indexOf(`${name} stop`) > calls.indexOf(`${name} start`))
  }
  t.ok(calls.indexOf('local stop') > calls.indexOf('health stop'), 'local stopped after health, which depends on it')
  t.notOk(calls.includes('releases start'), 'releases, after scheduling, never started')
  t.notOk(calls.includes('renewal start'), 'renewal never started')
  t.notOk(calls.includes('releases stop') || calls.includes('renewal stop'), 'nothing to stop for what never started')
  t.same(agent.mesh.getProtocols().filter(p => p.startsWith('/gatemesh/')), [], 'every gatemesh protocol handler removed')
  t.same(agent.mesh.services.pubsub.getTopics(), [], 'the registry left its gossip topic')
  t.equal(agent.membership.members().length <= 1, true)

  await agent.stop()
  // libp2p's address manager debounces a peer-store update by 1 s when the
  // listener closes: a timer that ends by itself. What is still open after
  // a few seconds would never close.
  const extra = (): string[] => {
    const after = count()
    return Object.keys(after).filter(k => after[k]! > (before[k] ?? 0)).map(k => `${k} +${after[k]! - (before[k] ?? 0)}`)
  }
  const until = Date.now() + 5000
  while (extra().length > 0 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 100))
  t.same(extra(), [], 'no handle outlives the agent')
})
