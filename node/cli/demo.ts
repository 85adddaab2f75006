import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { openSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { RUNTIME_FILE, type RuntimeInfo } from '../agent.ts'
import { initFleet } from '../identity/fleet.ts'
import { initNodeDir } from '../identity/node-dir.ts'
import { modelUploadForm } from './demo/model.ts'
import { NotificationSink, type DemoNotification } from './demo/notifications.ts'
import { freePort } from './ports.ts'
import { fetchStatus, renderMembers } from './status.ts'
import type { Role } from '../identity/certificate.ts'

export const DEMO_USAGE = 'gatemesh demo [--duration SECONDS] [--keep]'

interface Proc { name: string, dir: string, child?: ChildProcess }
interface DemoNode extends Proc { role: Role, labels: Record<string, string>, sensors: Array<Record<string, unknown>>, info?: RuntimeInfo }

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function waitForFile<T> (proc: Proc, file: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (proc.child?.exitCode != null) throw new Error(`${proc.name} exited with code ${proc.child.exitCode}; see ${proc.dir}`)
    try {
      return JSON.parse(await readFile(file, 'utf8')) as T
    } catch {}
    await sleep(100)
  }
  throw new Error(`${proc.name} did not start within ${timeoutMs} ms`)
}

/** Spawn `gatemesh ARGS` the way this process was started (sources or the app bundle). */
function gatemesh (proc: Proc, root: string, args: string[]): ChildProcess {
  const err = openSync(join(root, `${proc.name}.stderr`), 'a')
  return spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], { stdio: ['pipe', 'ignore', err] })
}

async function api (base: string, path: string, init: RequestInit & { token?: string } = {}): Promise<any> {
  const headers = new Headers(init.headers)
  if (init.token != null) headers.set('authorization', `Bearer ${init.token}`)
  const res = await fetch(new URL(path, base), { ...init, headers, signal: AbortSignal.timeout(60_000) })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${(body as { message?: string }).message ?? ''}`)
  return body
}

const clock = (t: number): string => new Date(t).toLocaleTimeString()

/**
 * The whole system on 127.0.0.1 with nothing else installed: a coordinator,
 * a server and two gateways with simulated sensors (temperatures with
 * occasional spikes, a door switch replayed from CSV); an anomaly model
 * uploaded and deployed through the coordinator's API onto the gateways with
 * a rule that notifies; a live member table and the notifications as they fire.
 */
export async function demoCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: 'string' }, keep: { type: 'boolean' } } })
  const duration = values.duration == null ? Infinity : Number(values.duration) * 1000
  const root = await mkdtemp(join(tmpdir(), 'gatemesh-demo-'))
  const tty = process.stdout.isTTY
  console.log(`gatemesh demo — everything on 127.0.0.1, files in ${root}`)
  const fleetDir = join(root, 'fleet')
  await initFleet(fleetDir)

  const sink = new NotificationSink()
  const webhook = await sink.start()
  await writeFile(join(root, 'door.csv'), 'door\n' + [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0].join('\n') + '\n')
  const temperature = (id: string, seed: number): Record<string, unknown> => ({
    id, type: 'simulated', measures: 'temperature', unit: '°C', waveform: 'sine', offset: 20, amplitude: 2, periodMs: 30_000,
    noise: 0.1, rateHz: 4, spikes: { every: 40 + seed * 16, magnitude: 15 }, min: -40, max: 125, seed
  })
  const coordinator: Proc = { name: 'coordinator', dir: join(root, 'coordinator') }
  const nodes: DemoNode[] = [
    { name: 'server-1', role: 'server', labels: { site: 'hq' }, sensors: [], dir: join(root, 'server-1') },
    { name: 'gateway-1', role: 'gateway', labels: { site: 'north' }, dir: join(root, 'gateway-1'), sensors: [temperature('temp1', 1), { id: 'door1', type: 'simulated', measures: 'door', unit: 'open', waveform: 'csv', rateHz: 0.5, csv: { path: join(root, 'door.csv') } }] },
    { name: 'gateway-2', role: 'gateway', labels: { site: 'south' }, dir: join(root, 'gateway-2'), sensors: [temperature('temp1', 2)] }
  ]
  const procs: Proc[] = [coordinator, ...nodes]
  const stopAll = async (): Promise<void> => {
    await Promise.all(procs.map(async p => {
      if (p.child == null || p.child.exitCode != null) return
      const exited = new Promise(resolve => p.child?.once('exit', resolve))
      p.child.kill('SIGTERM')
      await Promise.race([exited, sleep(8000)])
      if (p.child.exitCode == null) p.child.kill('SIGKILL')
    }))
    await sink.stop()
    if (values.keep !== true) await rm(root, { recursive: true, force: true })
  }

  let stopping = false
  let stopAfterDuration = (): void => {}
  const done = new Promise<void>(resolve => {
    const stop = (): void => {
      if (stopping) return
      stopping = true
      console.log('\nstopping the demo…')
      stopAll().then(() => { console.log('stopped'); resolve() }, () => { resolve() })
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
    // --duration counts from when everything is up, however long starting took
    stopAfterDuration = () => { if (Number.isFinite(duration)) setTimeout(stop, duration).unref() }
  })

  let url: string
  const password = randomBytes(9).toString('base64url')
  try {
    // the first admin, made before the coordinator starts, so the demo knows its password
    const add = gatemesh({ name: 'user-add', dir: root }, root, ['user', 'add', '--admin', '--data', coordinator.dir, '--username', 'admin', '--password-stdin'])
    add.stdin!.end(password + '\n')
    const code = await new Promise(resolve => add.once('exit', resolve))
    if (code !== 0) throw new Error(`creating the admin user failed (exit ${String(code)}); see ${root}/user-add.stderr`)
    const port = await freePort()
    const p2p = await freePort()
    coordinator.child = gatemesh(coordinator, root, ['coordinator', '--data', coordinator.dir, '--fleet', fleetDir, '--port', String(port), '--p2p-listen', `/ip4/127.0.0.1/tcp/${p2p}`])
    const c = await waitForFile<{ url: string, peerId: string }>(coordinator, join(coordinator.dir, 'coordinator.json'))
    url = c.url
    const bootstrap = [`/ip4/127.0.0.1/tcp/${p2p}/p2p/${c.peerId}`]
    for (const node of nodes) {
      await initNodeDir(node.dir, {
        fleetDir,
        role: node.role,
        labels: node.labels,
        listen: [`/ip4/127.0.0.1/tcp/${await freePort()}`],
        apiPort: 0,
        bootstrap,
        config: { logs: { stdout: false }, sensors: node.sensors, outbox: { baseDelayMs: 200, maxDelayMs: 2000 } }
      })
    }
    await Promise.all(nodes.map(async node => {
      node.child = gatemesh(node, root, ['agent', '--data', node.dir])
      node.info = await waitForFile<RuntimeInfo>(node, join(node.dir, RUNTIME_FILE))
    }))
  } catch (err) {
    await stopAll()
    throw err
  }
  const names = new Map(nodes.map(n => [n.info!.peerId, n.name]))
  console.log(`\n  dashboard   ${url}   (user admin, password ${password})`)
  for (const n of nodes) console.log(`  ${n.name.padEnd(10)}  ${n.role.padEnd(8)} ${n.info!.api}  ${n.sensors.map(s => `${String(s.id)} (${String(s.measures)})`).join(', ')}`)

  // a developer's day: log in, upload the model with its config, deploy it on the gateways
  const { token } = await api(url, '/api/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'admin', password }) })
  const uploaded = await api(url, '/api/v1/models', { method: 'POST', body: await modelUploadForm(webhook), token })
  console.log(`\nuploaded anomaly@1.0.0 through the API: fleet-signed bundle ${String(uploaded.digest ?? uploaded.bundle?.digest ?? '').slice(0, 16)}…`)
  const spec = {
    id: 'cold-room',
    model: { name: 'anomaly', version: '1.0.0' },
    replicas: 2,
    placement: { role: 'gateway', sensorTypes: ['temperature'], policy: 'spread' },
    instance: { input: { sensors: ['temp1'] } }
  }
  await api(url, '/api/v1/deployments', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec), token })
  console.log('deployed "cold-room" on both gateways (placed by the mesh\'s elected scheduler); notifications appear below as they fire')
  console.log(tty ? 'Ctrl-C stops the demo.\n' : '')

  const recent: string[] = []
  const line = (n: DemoNotification): string => `🔔 ${clock(n.at)}  ${names.get(n.node) ?? n.node}  ${n.sensor}: ${n.klass} (score ${n.score.toFixed(2)}${n.peak == null ? '' : `, peak ${n.peak.toFixed(1)} °C`})`
  sink.onNotify(n => {
    recent.push(line(n))
    if (recent.length > 8) recent.shift()
    if (!tty) console.log(line(n))
  })
  stopAfterDuration()

  const refresh = async (): Promise<void> => {
    for (const node of nodes) {
      if (node.info == null || node.child?.exitCode != null) continue
      try {
        const table = renderMembers(await fetchStatus(node.info.api))
        const deployment = await api(node.info.api, '/v1/deployments/cold-room').catch(() => null)
        const running = (deployment?.instances ?? []).filter((i: { state: string }) => i.state === 'running').map((i: { node: string }) => names.get(i.node) ?? i.node)
        const summary = `cold-room: ${running.length} of 2 replicas running${running.length > 0 ? ` (${running.join(', ')})` : ''} · ${sink.received.length} notifications`
        if (tty) process.stdout.write(`\x1b[2J\x1b[H gatemesh demo — ${new Date().toLocaleTimeString()}   dashboard ${url} (admin / ${password})   Ctrl-C stops\n\n${table}\n\n${summary}\n\n${recent.join('\n')}\n`)
        else console.log(`${table}\n${summary}\n`)
        return
      } catch {}
    }
  }
  const timer = setInterval(() => { if (!stopping) void refresh() }, tty ? 1000 : 5000)
  await done
  clearInterval(timer)
}
