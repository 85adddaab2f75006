/**
 * `npm run bench -- mesh --nodes 20 [--writes 50] [--kills 3] [--sources]`
 *
 * Starts N agents as separate processes on 127.0.0.1 (as shipped: the
 * esbuild bundle with the image's node flags; `--sources` runs the
 * TypeScript sources instead) and measures:
 * - convergence: a write on one node until it is visible on all (SSE watch on every node)
 * - failure detection: kill -9 of a node until every survivor marks it dead
 * - join: process start of one more node until its registry matches the mesh
 * - idle RSS (and PSS) per agent
 */
import { readFile } from 'node:fs/promises'
import { agentCommand } from './agents.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { watchEvents } from './sse.ts'
import { median, percentile, round } from './stats.ts'
import type { BenchArgs } from './run.ts'

async function memory (pid: number): Promise<{ rss: number, pss: number }> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? NaN)
  return { rss: kb('Rss') / 1024, pss: kb('Pss') / 1024 }
}

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const nodes = Number(args.nodes ?? 20)
  const writes = Number(args.writes ?? 50)
  const kills = Number(args.kills ?? 3)
  const fromSources = args.sources === true
  const log = (msg: string): void => { console.error(`[mesh] ${msg}`) }

  const command = await agentCommand(fromSources, log)
  const cluster = await Cluster.create({ command })
  try {
    const names = Array.from({ length: nodes }, (_, i) => `n${i}`)
    for (const [i, name] of names.entries()) {
      await cluster.addNode(name, { role: i === 0 ? 'server' : 'gateway', bootstrap: i === 0 ? [] : ['n0'], config: { logs: { stdout: false, level: 'info' } } })
    }
    const early = names.slice(0, -1)
    const late = names.at(-1)!
    log(`starting ${early.length} agents`)
    await cluster.start('n0')
    await Promise.all(early.slice(1).map(async n => await cluster.start(n)))
    const expectAlive = async (observers: string[], ids: string[]): Promise<boolean> => {
      const views = await Promise.all(observers.map(async n => await cluster.members(n)))
      return views.every(v => ids.every(id => v.get(id)?.state === 'alive'))
    }
    await waitFor(async () => await expectAlive(early, early.map(n => cluster.node(n).peerId)), 'the first agents to converge', 120_000, 500)
    log('mesh converged')

    // join: one more agent, from process start until it holds everything the bootstrap peer holds
    const joinStart = performance.now()
    await cluster.start(late, { wait: false })
    const stable = async (name: string): Promise<Map<string, string>> => {
      const { entries } = await cluster.get(name, '/v1/registry?tombstones=true')
      return new Map(entries.filter((e: any) => !e.key.startsWith('health/')).map((e: any) => [e.key, `${e.ts[0]}.${e.ts[1]}`]))
    }
    await waitFor(async () => {
      const [mine, theirs] = await Promise.all([stable(late), stable('n0')])
      return theirs.size > 0 && [...theirs].every(([k, ts]) => k === `node/${cluster.node(late).peerId}` || mine.get(k) === ts) && mine.has(`node/${cluster.node(late).peerId}`)
    }, 'the late agent to sync', 60_000, 20)
    const joinMs = performance.now() - joinStart
    log(`join ${joinMs.toFixed(0)} ms`)
    await waitFor(async () => await expectAlive(names, names.map(n => cluster.node(n).peerId)), 'all agents alive everywhere', 60_000, 250)

    await sleep(3000)
    const mem = await Promise.all(names.map(async n => await memory(cluster.node(n).child!.pid!)))
    log(`idle RSS median ${median(mem.map(m => m.rss)).toFixed(1)} MB`)

    // convergence: each write observed through every node's SSE watch
    const seen = new Map<string, Map<string, number>>()
    const sawWrite = (key: string, n: string): void => {
      let m = seen.get(key)
      if (m == null) seen.set(key, m = new Map())
      if (!m.has(n)) m.set(n, performance.now())
    }
    // a watch the agent closed (restart, slow reader) reconnects; what it missed meanwhile is read once by polling
    const reopenedAt = new Map<string, number>()
    let reconnects = 0
    const abort = new AbortController()
    for (const n of names) {
      let opened = false
      void watchEvents(`${cluster.node(n).api}/v1/watch?prefix=instance/`, ev => {
        if (String(ev.key).includes('/bench-')) sawWrite(ev.key, n)
      }, abort.signal, {
        onOpen: () => {
          if (opened) reopenedAt.set(n, performance.now())
          opened = true
        },
        onClose: err => {
          reconnects++
          log(`watch on ${n} closed (${err?.message ?? 'ended by the agent'}); reconnecting`)
        }
      })
    }
    await sleep(500)
    const convergence: number[] = []
    for (let i = 0; i < writes; i++) {
      const writer = names[Math.floor(Math.random() * names.length)]!
      const key = `instance/${cluster.node(writer).peerId}/bench-${i}`
      const t0 = performance.now()
      const res = await cluster.request(writer, 'PUT', `/v1/registry/${key}`, { value: { i } })
      if (res.status !== 200) throw new Error(`write ${i} failed: ${res.status}`)
      await waitFor(async () => {
        for (const n of names) {
          if (seen.get(key)?.has(n) === true || (reopenedAt.get(n) ?? -Infinity) < t0 - 1000) continue
          if ((await cluster.request(n, 'GET', `/v1/registry/${key}`)).status === 200) sawWrite(key, n)
        }
        return (seen.get(key)?.size ?? 0) === names.length
      }, `write ${i} on all nodes`, 10_000, 2)
      convergence.push(Math.max(...seen.get(key)!.values()) - t0)
      await sleep(50)
    }
    abort.abort()
    log(`convergence p50 ${percentile(convergence, 50).toFixed(1)} ms p99 ${percentile(convergence, 99).toFixed(1)} ms`)

    // failure detection: kill -9, then poll every survivor
    const detection: number[] = []
    let alive = [...names]
    for (let k = 0; k < kills; k++) {
      const victim = alive[1 + Math.floor(Math.random() * (alive.length - 1))]!
      const id = cluster.node(victim).peerId
      alive = alive.filter(n => n !== victim)
      const t0 = performance.now()
      cluster.kill(victim)
      const deadAt = new Map<string, number>()
      await waitFor(async () => {
        await Promise.all(alive.filter(n => !deadAt.has(n)).map(async n => {
          if ((await cluster.members(n)).get(id)?.state === 'dead') deadAt.set(n, performance.now())
        }))
        return deadAt.size === alive.length
      }, `${victim} dead on every survivor`, 30_000, 25)
      detection.push(Math.max(...deadAt.values()) - t0)
      log(`kill ${victim}: dead on all ${alive.length} survivors after ${detection.at(-1)!.toFixed(0)} ms`)
      await sleep(1500)
    }

    return {
      scenario: 'mesh',
      nodes,
      convergenceP50Ms: round(percentile(convergence, 50)),
      convergenceP99Ms: round(percentile(convergence, 99)),
      failureDetectionMs: round(median(detection), 0),
      joinMs: round(joinMs, 0),
      rssMbMedian: round(median(mem.map(m => m.rss))),
      writes: convergence.length,
      watchReconnects: reconnects,
      failureDetectionAllMs: detection.map(d => round(d, 0)),
      pssMbMedian: round(median(mem.map(m => m.pss))),
      agent: fromSources ? 'sources' : 'bundle'
    }
  } finally {
    await cluster.close()
  }
}
