/**
 * A rollout over real, capped links:
 *
 *   npm run bench -- rollout --nodes 8 --link-mbit 20 [--waves 100] [--sources]
 *
 * A seed agent and `nodes` devices, each in a network namespace of its own
 * with its link capped by `tc tbf` both ways (as in the bundle benchmark).
 * Every device runs as an image lays it out: the image's loader and agent
 * unit under a stand-in for systemd, release 1.0.0 current. The seed holds
 * release 1.1.0 (this repository's app, a fleet-signed release bundle); the
 * benchmark runs `gatemesh rollout create` through the seed and measures
 * until every device runs 1.1.0 and has passed its health check.
 *
 *  - seconds: from `rollout create` to the last device healthy on 1.1.0;
 *  - each: every device's time, in the order they finished;
 *  - restartedSeconds: until the last device's agent process on 1.1.0 had
 *    started (pull, install, exit and the loader's switch: the link-bound part);
 *  - probationSeconds: the longest a device then took from its start to
 *    passing its health check (agent start-up, mesh, sync: CPU-bound here);
 *  - lineRateSeconds: what one copy takes at the link's rate;
 *  - loadavg: the machine's 1-minute load at the start and the end.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { loadFleet } from '../../node/identity/fleet.ts'
import { REPO_ROOT } from '../../packaging/app-bundle.ts'
import { CLI, Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { NetLab } from '../helpers/netns.ts'
import { flashedDevice, releaseZip, type FlashedDevice } from '../helpers/release-device.ts'
import { agentCommand } from './agents.ts'
import { capLinks } from './bundle-links.ts'
import type { BenchArgs } from './run.ts'

const exec = promisify(execFile)
const log = (msg: string): void => { console.log(`[rollout] ${msg}`) }

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const nodes = Number(args.nodes ?? 8)
  const linkMbit = Number(args['link-mbit'] ?? 20)
  const waves = String(args.waves ?? '100')
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 32) throw new Error('--nodes must be 1..32')
  if (!Number.isFinite(linkMbit) || linkMbit <= 0) throw new Error('--link-mbit must be a positive number')
  const available = await NetLab.available()
  if (!available.ok) throw new Error(`this benchmark needs network namespaces (root and iproute2): ${available.reason ?? 'ip netns add failed'}`)

  // under the repository: the releases' app resolves its external modules from its node_modules
  const work = await mkdtemp(join(REPO_ROOT, 'dist', 'rollout-bench-'))
  const lab = await NetLab.create(nodes + 1)
  const devices: FlashedDevice[] = []
  let cluster: Cluster | undefined
  const cleanup = async (): Promise<void> => {
    await Promise.all(devices.map(async d => { await d.unit.stop() }))
    await cluster?.close()
    await lab.destroy()
  }
  const onSignal = (): void => { void cleanup().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    await capLinks(lab, linkMbit)
    const command = await agentCommand(args.sources === true, log)
    cluster = await Cluster.create({ command })
    const fleet = await loadFleet(cluster.fleetDir)
    const signer = { key: fleet.privateKey }
    const v1 = await releaseZip(work, '1.0.0', signer)
    const v2 = await releaseZip(work, '1.1.0', signer)
    log(`release 1.1.0: ${(v2.size / 1048576).toFixed(1)} MiB; one copy at ${linkMbit} Mbit/s takes ${(v2.size * 8 / (linkMbit * 1e6)).toFixed(1)} s`)
    const quiet = { logs: { stdout: false, level: 'info' } }
    await cluster.addNode('seed', { role: 'server', bootstrap: [], config: quiet, netns: { ns: lab.hosts[0]!, address: lab.address(0) } })
    const names = Array.from({ length: nodes }, (_, i) => `d${i + 1}`)
    for (const [i, n] of names.entries()) {
      const node = await cluster.addNode(n, { bootstrap: ['seed'], config: quiet, netns: { ns: lab.hosts[i + 1]!, address: lab.address(i + 1) } })
      devices.push(await flashedDevice(join(work, n), { dataDir: node.dir, first: { file: v1.file, version: '1.0.0' }, fleetPublicKey: fleet.publicKey, prefix: ['ip', 'netns', 'exec', lab.hosts[i + 1]!] }))
    }
    await cluster.start('seed')
    for (const d of devices) d.unit.start()
    const c = cluster
    await Promise.all(names.map(async n => {
      await waitFor(async () => (await c.get(n, '/v1/release')).record?.managed === true, `${n} to run 1.0.0 under its loader`, 300_000, 1000)
    }))
    log(`${nodes} devices run 1.0.0 under their loaders`)
    const cli = command == null ? [process.execPath, CLI] : [command.exec, ...command.args]
    const inSeed = async (...a: string[]): Promise<string> => (await exec('ip', ['netns', 'exec', lab.hosts[0]!, ...cli, ...a], { timeout: 600_000, env: { ...process.env, ...command?.env } })).stdout
    await inSeed('release', 'publish', v2.file, '--data', c.node('seed').dir)
    const start = performance.now()
    const startWall = Date.now()
    const loadAtStart = loadavg()[0]!
    const split = new Map<string, { restarted: number, probation: number }>()
    await inSeed('rollout', 'create', v2.file, '--fleet', c.fleetDir, '--waves', waves, '--health-deadline', '600', '--id', 'bench', '--data', c.node('seed').dir)
    log(`rollout created (waves ${waves})`)
    const done = new Map<string, number>()
    while (done.size < nodes) {
      for (const n of names) {
        if (done.has(n)) continue
        const r = await c.get(n, '/v1/release').catch(() => undefined)
        if (r?.record?.version === '1.1.0' && r.record.state === 'healthy') {
          done.set(n, (performance.now() - start) / 1000)
          // the record's own clock (this machine's): when the agent on 1.1.0 started, and when it proved healthy
          if (typeof r.record.startedAt === 'number' && typeof r.record.healthyAt === 'number') {
            split.set(n, { restarted: (r.record.startedAt - startWall) / 1000, probation: (r.record.healthyAt - r.record.startedAt) / 1000 })
          }
          log(`${n} healthy on 1.1.0 after ${done.get(n)!.toFixed(1)} s`)
        } else if (r?.record?.state === 'rolled-back' || r?.record?.state === 'failed') {
          throw new Error(`${n}: ${String(r.record.state)}: ${String(r.record.detail)}`)
        }
      }
      if ((performance.now() - start) / 1000 > 30 * 60) throw new Error('the rollout did not finish in 30 minutes')
      await sleep(500)
    }
    const each = [...done.values()].sort((a, b) => a - b)
    const round = (n: number): number => Math.round(n * 100) / 100
    return {
      scenario: 'rollout',
      nodes,
      linkMbit,
      waves,
      releaseMb: round(v2.size / 1048576),
      lineRateSeconds: round(v2.size * 8 / (linkMbit * 1e6)),
      seconds: round(each.at(-1)!),
      each: each.map(round),
      restartedSeconds: round(Math.max(...[...split.values()].map(x => x.restarted))),
      probationSeconds: round(Math.max(...[...split.values()].map(x => x.probation))),
      loadavg: [round(loadAtStart), round(loadavg()[0]!)]
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanup()
    await rm(work, { recursive: true, force: true })
  }
}
