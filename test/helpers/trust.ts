import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { budget, startBudget } from './budget.ts'
import { waitFor, type Cluster } from './cluster.ts'
import { run, start, type TestProcess } from './processes.ts'
import type { Test } from 'tap'

export const ROGUE = new URL('./rogue.ts', import.meta.url).pathname

/** Start test/helpers/rogue.ts on a node directory; it is ended when `t` ends, and on every other way out (test/helpers/processes.ts). */
export function startRogue (t: Test, dir: string, args: string[]): TestProcess {
  return start(process.execPath, [ROGUE, '--data', dir, ...args], { name: `rogue ${args.join(' ')}`, t, graceMs: 2000 })
}

/**
 * Run the CLI as the cluster runs its agents (the app bundle: it starts in a
 * fraction of the time the sources take on a loaded machine); its stdout.
 */
export async function gatemesh (cluster: Cluster, args: string[], timeoutMs = 60_000): Promise<string> {
  const { exec, args: pre, env } = cluster.command
  return (await run(exec, [...pre, ...args], { name: `gatemesh ${args[0] ?? ''}`, timeoutMs: budget(timeoutMs), ...(env == null ? {} : { env }) })).stdout
}

/** What the rogue reports it sent (it writes rogue.json after each attack round). */
export async function rogueReport (dir: string, timeoutMs = 180_000): Promise<{ peerId: string, sent: string[] }> {
  return await waitFor(async () => JSON.parse(await readFile(join(dir, 'rogue.json'), 'utf8')), 'the rogue to attack', timeoutMs)
}

/** The sum of a Prometheus metric on one agent, over the series whose labels include `labels`. */
export async function metric (cluster: Cluster, node: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${cluster.node(node).api}/metrics`, { signal: AbortSignal.timeout(10_000) })).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue
    sum += Number(line.split(' ').pop())
  }
  return sum
}

/** Resident set size of a process, in bytes, from /proc. */
export async function rssBytes (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1]
  if (kb == null) throw new Error(`no VmRSS for ${pid}`)
  return Number(kb) * 1024
}

/** The agent's structured log lines. */
export async function agentLog (dir: string): Promise<Array<Record<string, any>>> {
  const text = await readFile(join(dir, 'logs', 'agent.log'), 'utf8').catch(() => '')
  return text.trim().split('\n').filter(l => l !== '').flatMap(l => {
    try {
      return [JSON.parse(l)]
    } catch {
      return []
    }
  })
}

/**
 * Start agents at once and wait for each. They compete for the CPU, so each
 * start gets at least 180 s (stretched past that by the first start this
 * process measured, test/helpers/budget.ts).
 */
export async function startAll (cluster: Cluster, names: string[], timeoutMs = startBudget(180_000)): Promise<void> {
  for (const n of names) await cluster.start(n, { wait: false })
  await Promise.all(names.map(async n => await cluster.waitReady(n, timeoutMs)))
}
