/**
 * `npm run bench -- revocation [--nodes 5] [--rounds 3] [--sources]`
 *
 * N honest agents plus one victim per round, all real processes on
 * 127.0.0.1. Each round revokes one victim with `gatemesh revoke` through
 * an honest agent's API and measures the time until every honest agent
 * refuses it (denied as revoked, no longer a member, nothing it wrote left
 * in its registry). Target: cut off everywhere within 5 s.
 */
import { join } from 'node:path'
import { agentCommand } from './agents.ts'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { gatemesh } from '../helpers/trust.ts'
import { median, percentile, round } from './stats.ts'
import type { BenchArgs } from './run.ts'

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const nodes = Number(args.nodes ?? 5)
  const rounds = Number(args.rounds ?? 3)
  const log = (msg: string): void => { console.error(`[revocation] ${msg}`) }
  const command = await agentCommand(args.sources === true, log)
  const cluster = await Cluster.create(command == null ? {} : { command })
  try {
    const honest = Array.from({ length: nodes }, (_, i) => `n${i}`)
    const victims = Array.from({ length: rounds }, (_, i) => `v${i}`)
    for (const [i, name] of [...honest, ...victims].entries()) {
      await cluster.addNode(name, { role: i === 0 ? 'server' : 'gateway', bootstrap: i === 0 ? [] : ['n0'], config: { logs: { stdout: false, level: 'info' } } })
    }
    await cluster.start('n0')
    await Promise.all([...honest, ...victims].slice(1).map(async n => await cluster.start(n)))
    const total = nodes + rounds
    await waitFor(async () => (await Promise.all(honest.map(async n => [...(await cluster.members(n)).values()].filter(m => m.state === 'alive').length))).every(c => c === total), 'all agents alive', 180_000, 500)

    const cutOff = async (observer: string, victim: string): Promise<boolean> => {
      const status = await cluster.get(observer, '/v1/status')
      if (!status.denied.some((d: any) => d.peerId === victim)) return false
      if (status.members.some((m: any) => m.peerId === victim)) return false
      const { entries } = await cluster.get(observer, '/v1/registry')
      return !entries.some((e: any) => e.writer === victim)
    }
    const times: number[] = []
    for (const [i, name] of victims.entries()) {
      const victim = cluster.node(name).peerId
      const via = honest[i % honest.length]!
      const started = performance.now()
      await gatemesh(cluster, ['revoke', victim, '--key', join(cluster.fleetDir, 'fleet.key'), '--data', cluster.node(via).dir])
      const ms = await waitFor(async () => (await Promise.all(honest.map(async n => await cutOff(n, victim)))).every(Boolean) ? performance.now() - started : null, `${name} cut off everywhere`, 60_000, 25)
      log(`round ${i + 1}: ${name} cut off by ${nodes} agents in ${Math.round(ms)} ms (revoked through ${via}, CLI start-up included)`)
      times.push(ms)
    }
    return {
      scenario: 'revocation',
      agents: nodes,
      rounds,
      cutOffMs: { p50: round(median(times)), max: round(percentile(times, 100)) },
      targetMs: 5000
    }
  } finally {
    await cluster.close()
  }
}
