import { join } from 'node:path'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { anomalyBundleZip, SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { CLI, Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { budget, noteStart, startBudget } from '../helpers/budget.ts'
import { run, start, type TestProcess } from '../helpers/processes.ts'
import { Tmpfs, tmpfsUnavailable } from '../helpers/tmpfs.ts'

const skip = tmpfsUnavailable()
if (skip != null) {
  t.plan(0, skip)
  process.exit(0)
}

// one agent process whose data dir is a 24 MiB tmpfs the test fills up; its stdout (JSON log lines) is kept
const cluster = await Cluster.create()
const dir = join(cluster.root, 'gw')
const disk = await Tmpfs.mount(dir, 24 * 1024 * 1024)
let agent: TestProcess | undefined
const lines: Array<{ level: string, msg: string, [k: string]: unknown }> = []
t.teardown(async () => {
  agent?.kill()
  // the mount point is inside the cluster's directory: unmount before it is removed
  await disk.unmount()
  await cluster.close()
})
const gw = await cluster.addNode('gw', { config: { logs: { stdout: true, level: 'debug' } } })

/** The agent from the app bundle, as the cluster starts its agents, but with its stdout (the log) read here. */
async function startAgent (): Promise<TestProcess> {
  const started = performance.now()
  const p = start(cluster.command.exec, [...cluster.command.args, 'agent', '--data', dir], {
    name: 'agent gw (disk full)',
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(cluster.command.env == null ? {} : { env: cluster.command.env })
  })
  const child = p.child
  let partial = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const parts = (partial + d).split('\n')
    partial = parts.pop() ?? ''
    for (const p of parts) {
      try {
        lines.push(JSON.parse(p))
      } catch {}
    }
  })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-4000) })
  agent = p
  // not waitFor: its budget is the machine's slowness, which this very start measures
  const deadline = Date.now() + startBudget()
  while (true) {
    if (p.exit != null) throw new Error(`the agent exited with ${p.exit.signal ?? String(p.exit.code)}: ${stderr}`)
    const ok = await fetch(`${gw.api}/healthz`, { signal: AbortSignal.timeout(2000) }).then(r => r.ok, () => false)
    if (ok) break
    if (Date.now() > deadline) throw new Error(`the agent did not answer within ${startBudget()} ms: ${stderr}`)
    await sleep(250)
  }
  noteStart(performance.now() - started)
  return p
}

async function stopAgent (p: TestProcess): Promise<number | null> {
  return (await p.stop(budget(30_000)))?.code ?? null
}

// the node's API token, read now: writes need it, and the file is on the disk the test fills
const auth = await cluster.auth('gw')
const api = async (method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> => {
  const res = await fetch(gw.api + path, {
    method,
    headers: { ...auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000)
  })
  return { status: res.status, body: await res.json().catch(() => undefined) }
}
const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
const predictBody = { instances: [scaled(temperatures(21)), scaled(temperatures(21, 15))] }
const key = (name: string): string => `/v1/registry/instance/${gw.peerId}/${name}`

let child = await startAgent()
const fleet = await loadFleet(cluster.fleetDir)
const built = await anomalyBundleZip(fleet.privateKey, { under: cluster.root })
await run(process.execPath, [CLI, 'run', built.out, '--api', gw.api, '--data', gw.dir], { timeoutMs: budget(120_000) })
await waitFor(async () => (await api('POST', '/v1/models/anomaly:predict', predictBody)).status === 200, 'the model to answer', 60_000, 250)

await t.test('the disk fills up: the agent stops writing, says so once, and keeps answering', async t => {
  await disk.fill()
  t.ok(await disk.freeBytes() < 64 * 1024, 'the data dir\'s disk is full')
  // writes: registry entries (persisted), log lines at debug (file and log store), predictions
  let i = 0
  const status = await waitFor(async () => {
    await api('PUT', key(`fill-${i++}`), { value: { pad: 'x'.repeat(4000) } })
    const s = (await api('GET', '/v1/status')).body
    return s?.disk?.full === true ? s : undefined
  }, 'the agent to find the disk full', 60_000, 50)
  t.match(status.disk, { full: true, path: new RegExp(`^${dir}`) }, `status says the disk is full at ${String(status.disk.path)}`)

  for (let round = 0; round < 10; round++) {
    t.equal((await api('GET', '/v1/status')).status, 200)
    const p = await api('POST', '/v1/models/anomaly:predict', predictBody)
    t.equal(p.status, 200, 'predict answers')
    t.ok(p.body.predictions[1][1] > 0.9)
    t.equal((await api('PUT', key(`during-${round}`), { value: { round } })).status, 200, 'a registry write is taken (held in memory)')
    t.equal((await api('GET', key(`during-${round}`))).status, 200, 'and reads back')
    await sleep(500)
  }
  t.equal((await fetch(`${gw.api}/healthz`)).status, 200)
  const metrics = await (await fetch(`${gw.api}/metrics`)).text()
  t.match(metrics, /^gatemesh_disk_full\{[^}]*\} 1$/m, 'the disk_full gauge is 1')
  t.ok(child.running, 'the agent is still running: no crash, nothing for systemd to restart')

  const errors = lines.filter(l => l.level === 'error' || l.level === 'fatal')
  t.equal(errors.length, 1, `one error line in all that: ${errors.map(e => e.msg).join(' | ')}`)
  t.match(errors[0], { service: 'storage', msg: /^disk full: writing stopped/, path: new RegExp(`^${dir}`) }, 'that the disk is full, with the path')
})

await t.test('space returns: writing resumes by itself, and what was written then persists', async t => {
  await disk.free()
  const resumed = await waitFor(async () => {
    const s = (await api('GET', '/v1/status')).body
    return s?.disk?.full === false ? s : undefined
  }, 'writing to resume', 60_000, 250)
  t.same(resumed.disk, { full: false })
  t.ok(lines.some(l => l.level === 'info' && /writing resumed/.test(l.msg)), 'said at info that writing resumed')
  t.equal((await api('PUT', key('after'), { value: { after: true } })).status, 200, 'a new registry write')
  await sleep(500)
  t.equal(await stopAgent(child), 0, 'the agent stops cleanly')

  child = await startAgent()
  t.match((await api('GET', key('after'))).body, { value: { after: true } }, 'the write after space returned persisted across a restart')
  t.match((await api('GET', key('during-9'))).body, { value: { round: 9 } }, 'so did one taken while the disk was full (held, then written)')
  await waitFor(async () => (await api('POST', '/v1/models/anomaly:predict', predictBody)).status === 200, 'the model to answer after the restart', 60_000, 250)
  t.pass('and the model runs again after the restart')
  t.equal(await stopAgent(child), 0)
})
