import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { anomalyBundleZip, SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { budget } from '../helpers/budget.ts'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { start as startProcess, type TestProcess } from '../helpers/processes.ts'

// Issue 14: "an action script (uploaded by a developer):
// process.kill(process.ppid) kills its agent; the outbox redelivers at
// every start, so the agent is killed again 3 s after each restart".

t.test('a real agent: the script cannot kill it, and the job ends in the dead letters', async t => {
  const cluster = await Cluster.create()
  t.teardown(async () => { await cluster.close() })
  const gw = await cluster.addNode('gw', { config: { outbox: { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 200 }, scripts: { timeoutMs: 10_000 } } })
  await cluster.start('gw', { wait: false })
  const info = await cluster.waitReady('gw')
  const fleet = await loadFleet(cluster.fleetDir)
  const built = await anomalyBundleZip(fleet.privateKey, {
    under: cluster.root,
    name: 'evil',
    action: 'process.kill(process.ppid)\nprocess.kill(-1, "SIGKILL")\n',
    config: { rules: [{ name: 'always', when: 'score >= 0', actions: [{ type: 'script' }] }] }
  })
  const upload = await fetch(`${gw.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('gw') }, body: await readFile(built.out) })
  t.equal(upload.status, 201)
  // starting an instance loads TF.js in workers: slow on a busy machine, so not through the 5 s helper
  const run = await fetch(`${gw.api}/v1/instances`, { method: 'POST', headers: { 'content-type': 'application/json', ...await cluster.auth('gw') }, body: JSON.stringify({ bundle: built.digest }), signal: AbortSignal.timeout(120_000) })
  t.equal(run.status, 201, await run.clone().text())
  const scaled = temperatures(20).map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
  for (let i = 0; i < 2; i++) {
    const predicted = await fetch(`${gw.api}/v1/models/evil:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances: [scaled] }), signal: AbortSignal.timeout(60_000) })
    t.equal(predicted.status, 200, 'a prediction fires the rule')
  }

  const outbox = await waitFor(async () => {
    const o = await cluster.get('gw', '/v1/outbox')
    return o.pending === 0 && o.dead.length === 2 ? o : undefined
  }, 'both script jobs to settle', 120_000, 250)
  for (const letter of outbox.dead) {
    t.match(letter, { type: 'script', attempts: 3, reason: 'attempts', lastError: /exited with code 1: Error: kill (EPERM|ESRCH)/ }, 'tried, failed, given up: the kill was refused every time')
  }
  t.equal(gw.child?.exitCode, null, 'the agent process never exited')
  t.equal(gw.child?.signalCode, null)
  t.equal((await cluster.get('gw', '/healthz')).ok, true, 'and answers')
  t.equal(JSON.parse(await readFile(join(gw.dir, 'agent.json'), 'utf8')).pid, info.pid, 'the same process as at the start')
  const status = await cluster.get('gw', '/v1/status')
  t.match(status.scripts.isolation, { network: 'declared destinations only', signals: 'own processes only' }, `isolation in /v1/status: ${JSON.stringify(status.scripts.isolation)}`)
  t.match(await cluster.stderr('gw') + await readFile(join(gw.dir, 'logs', 'agent.log'), 'utf8').catch(() => ''), /action scripts run isolated/, 'and in the log')
})

const FIXTURE = new URL('./fixtures/outbox-crash.ts', import.meta.url).pathname

t.test('where a script can kill its agent: after restarts the job is dead-lettered and the agent stays up', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gatemesh-outbox-crash-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const start = async (...args: string[]): Promise<{ process: TestProcess, lines: Array<Record<string, any>>, exited: Promise<NodeJS.Signals | null> }> => {
    const p = startProcess(process.execPath, [FIXTURE, dir, ...args], { name: `outbox-crash ${args.join(' ')}`, stdio: ['ignore', 'pipe', 'inherit'], t })
    const lines: Array<Record<string, any>> = []
    createInterface({ input: p.child.stdout! }).on('line', l => { lines.push(JSON.parse(l)) })
    return { process: p, lines, exited: p.exited.then(e => e.signal) }
  }

  const first = await start('--enqueue')
  t.equal(await first.exited, 'SIGKILL', 'the first delivery killed the process')
  const second = await start()
  t.equal(await second.exited, 'SIGKILL', 'after a restart it was tried again, and killed it again')
  t.same(second.lines[0], { queued: [{ id: 'kills-its-agent', inFlight: true, crashes: 0 }] }, 'the restart found the job marked in flight')

  const third = await start()
  await waitFor(() => third.lines.length > 0, 'the third start to report', 60_000)
  t.same(third.lines[0], { queued: [{ id: 'kills-its-agent', inFlight: true, crashes: 1 }] }, 'in flight again, for the second time')
  const settled = await waitFor(() => third.lines.find(l => l.settled != null)?.settled, 'the job to settle', 60_000)
  t.same(settled.pending, [])
  t.match(settled.dead, [{ id: 'kills-its-agent', reason: 'crashes', crashes: 2, lastError: /the agent stopped 2 times while delivering this job; not tried again/ }])
  await new Promise(resolve => setTimeout(resolve, budget(1000)))
  t.ok(third.process.running, 'the third start stays up')
  t.same(await third.process.stop(), { code: 0, signal: null }, 'and stops when told')
})
