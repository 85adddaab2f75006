import { spawn, type ChildProcess } from 'node:child_process'
import { openSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { RUNTIME_FILE, type RuntimeInfo } from '../agent.ts'
import { initFleet } from '../identity/fleet.ts'
import { initNodeDir } from '../identity/node-dir.ts'
import { freePort } from './ports.ts'
import { fetchStatus, renderMembers } from './status.ts'
import type { Role } from '../identity/certificate.ts'

export const DEMO_USAGE = 'gatemesh demo [--duration SECONDS] [--keep]'


interface DemoNode { name: string, role: Role, labels: Record<string, string>, dir: string, child?: ChildProcess, info?: RuntimeInfo }

async function waitForRuntime (node: DemoNode, timeoutMs = 30_000): Promise<RuntimeInfo> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (node.child?.exitCode != null) throw new Error(`${node.name} exited with code ${node.child.exitCode}; see ${join(node.dir, 'logs')}`)
    try {
      return JSON.parse(await readFile(join(node.dir, RUNTIME_FILE), 'utf8')) as RuntimeInfo
    } catch {}
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`${node.name} did not start within ${timeoutMs} ms`)
}

/**
 * A throwaway fleet on 127.0.0.1: one server and two gateways as separate
 * agent processes, with a live table of members and health.
 */
export async function demoCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { duration: { type: 'string' }, keep: { type: 'boolean' } } })
  const duration = values.duration == null ? Infinity : Number(values.duration) * 1000
  const root = await mkdtemp(join(tmpdir(), 'gatemesh-demo-'))
  const tty = process.stdout.isTTY
  console.log(`gatemesh demo: fleet and nodes in ${root}`)
  await initFleet(join(root, 'fleet'))

  const nodes: DemoNode[] = [
    { name: 'server-1', role: 'server', labels: { zone: 'demo' }, dir: join(root, 'server-1') },
    { name: 'gateway-1', role: 'gateway', labels: { zone: 'demo', site: 'north' }, dir: join(root, 'gateway-1') },
    { name: 'gateway-2', role: 'gateway', labels: { zone: 'demo', site: 'south' }, dir: join(root, 'gateway-2') }
  ]
  let bootstrap: string[] = []
  for (const node of nodes) {
    const port = await freePort()
    const { peerId } = await initNodeDir(node.dir, {
      fleetDir: join(root, 'fleet'),
      role: node.role,
      labels: node.labels,
      listen: [`/ip4/127.0.0.1/tcp/${port}`],
      apiPort: 0,
      bootstrap,
      config: { logs: { stdout: false } }
    })
    if (bootstrap.length === 0) bootstrap = [`/ip4/127.0.0.1/tcp/${port}/p2p/${peerId}`]
  }

  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map(async n => {
      if (n.child == null || n.child.exitCode != null) return
      const exited = new Promise(resolve => n.child?.once('exit', resolve))
      n.child.kill('SIGTERM')
      await Promise.race([exited, new Promise(resolve => setTimeout(resolve, 5000))])
      if (n.child.exitCode == null) n.child.kill('SIGKILL')
    }))
    if (values.keep !== true) await rm(root, { recursive: true, force: true })
  }

  let stopping = false
  // --duration counts from when the agents are up, however long starting took
  let stopAfterDuration = (): void => {}
  const done = new Promise<void>(resolve => {
    const stop = (): void => {
      if (stopping) return
      stopping = true
      console.log('\nstopping the demo agents…')
      stopAll().then(() => { console.log('stopped'); resolve() }, () => { resolve() })
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
    stopAfterDuration = () => { if (Number.isFinite(duration)) setTimeout(stop, duration).unref() }
  })

  try {
    for (const node of nodes) {
      const err = openSync(join(root, `${node.name}.stderr`), 'a')
      node.child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'agent', '--data', node.dir], { stdio: ['ignore', 'ignore', err] })
      node.info = await waitForRuntime(node)
      console.log(`  ${node.name.padEnd(10)} ${node.role.padEnd(8)} ${node.info.peerId}  api ${node.info.api}`)
    }
  } catch (err) {
    await stopAll()
    throw err
  }
  console.log(tty ? '\nCtrl-C stops the demo.\n' : '')
  stopAfterDuration()

  const refresh = async (): Promise<void> => {
    for (const node of nodes) {
      if (node.info == null || node.child?.exitCode != null) continue
      try {
        const text = renderMembers(await fetchStatus(node.info.api))
        process.stdout.write(tty ? `\x1b[2J\x1b[H gatemesh demo — ${new Date().toLocaleTimeString()} (Ctrl-C to stop)\n\n${text}\n` : `${text}\n\n`)
        return
      } catch {}
    }
  }
  const timer = setInterval(() => { if (!stopping) void refresh() }, tty ? 1000 : 5000)
  await done
  clearInterval(timer)
}
