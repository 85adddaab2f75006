/**
 * `npm run bench -- scale [--peers 20,200,1000,5000] [--zone-size 200] [--seconds 60] [--real-check 50|0] [--versus serf] [--profile DIR]`
 *
 * What one agent costs as the fleet grows. Each point is ONE real agent
 * process (the app bundle) in a fleet of N whose other N−1 members are
 * played by load-generator processes (test/bench/scale/) speaking the real
 * protocols over real libp2p connections on 127.0.0.1, with certificates
 * the bench's own fleet key issued and every entry signed by its writer.
 * The agent is measured from outside: CPU from /proc/<pid>/stat, RSS from
 * /proc/<pid>/status, bytes from the kernel's TCP socket counters of the
 * sockets it holds (ss), registry keys from its /metrics. The real check
 * runs a mesh of real agents and prints its per-agent figures beside a
 * simulated point of the same size.
 */
import { resolve } from 'node:path'
import { agentCommand } from './agents.ts'
import { runVersusSerf } from './scale-serf.ts'
import { simulatedPoint, type Point } from './scale/point.ts'
import { realCheck } from './scale/real.ts'
import { coordinatorPoint } from './scale/coordinator.ts'
import type { BenchArgs } from './run.ts'

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const log = (msg: string): void => { console.error(`[scale] ${msg}`) }
  if (args.versus === 'serf') return await runVersusSerf(args)
  if (args.versus !== undefined) throw new Error(`--versus: only serf is known, not ${String(args.versus)}`)
  // `--peers none`: only the real check and the coordinator
  const peers = args.peers === 'none' ? [] : String(args.peers ?? '20,200,1000,5000').split(',').map(Number)
  if (peers.some(n => !Number.isInteger(n) || n < 2)) throw new Error('--peers: a comma-separated list of fleet sizes ≥ 2')
  const seconds = Number(args.seconds ?? 60)
  // zones of this many members (the agent's included); the target holds for zones of ≤ 200
  const zoneSize = Number(args['zone-size'] ?? 200)
  if (!Number.isInteger(zoneSize) || zoneSize < 2) throw new Error('--zone-size: an integer ≥ 2')
  const realN = args['real-check'] === undefined ? 50 : Number(args['real-check'])
  if (realN !== 0 && (!Number.isInteger(realN) || realN < 2)) throw new Error('--real-check: 0 (none), or the size of the real mesh, ≥ 2')
  const coordinatorPeers = args.coordinator === undefined ? 1000 : Number(args.coordinator)
  const command = await agentCommand(args.sources === true, log)
  // where the agent's time goes: V8 writes one .cpuprofile per agent process when it exits
  if (typeof args.profile === 'string') command.args.unshift('--cpu-prof', `--cpu-prof-dir=${resolve(args.profile)}`)

  const points: Point[] = []
  for (const n of peers) points.push(await simulatedPoint({ peers: n, seconds, command, zoneSize, log }))
  const result: Record<string, unknown> = { scenario: 'scale', points }
  if (coordinatorPeers > 0) result.coordinator = await coordinatorPoint({ peers: coordinatorPeers, seconds, command, log })
  // a real mesh that cannot run here (50 agents on 2 cores) is reported in the JSON, not allowed to lose the points above
  if (realN > 0) {
    result.realCheck = await realCheck({ agents: realN, seconds, command, log }).catch((err: Error) => {
      log(`real check failed: ${err.message}`)
      return { agents: realN, error: err.message.split('\n')[0] }
    })
  }
  result.machine = { cores: (await import('node:os')).cpus().length, load: (await import('node:os')).loadavg().map(l => Math.round(l * 100) / 100), date: new Date().toISOString() }
  return result
}
