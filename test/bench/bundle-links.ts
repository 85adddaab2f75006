/**
 * Bundle distribution over real, capped links:
 *
 *   npm run bench -- bundle --size-mb 64 --peers 8 --link-mbit 20 [--sources]
 *
 * Every agent (one seed holding the bundle, `peers` pullers) runs in a
 * network namespace of its own on a switch this benchmark builds
 * (test/helpers/netns.ts), and each host's link is capped by `tc tbf` in
 * both directions: on the host's side of its veth (its upload) and on the
 * switch's side (its download). Gateways are limited by their links, not by
 * the two CPUs every process shares here, so what peer-to-peer delivery buys
 * shows: one source must push every copy through its own uplink.
 *
 *  - singlePullSeconds: one puller, one provider;
 *  - fanoutSeconds: `peers` pullers at once, serving each other what they hold;
 *  - singleSourceFanoutSeconds: the same with sharing off, so only the seed serves;
 *  - fetchSeconds: each of those until every puller held every chunk, before
 *    the final check (the signature, and every file's sha256 against the
 *    signed manifest; the zip itself is not hashed again, its chunks were
 *    checked on arrival): CPU-bound, and slow on a loaded machine;
 *  - loadavg: the machine's 1-minute load at the start and the end.
 *
 * Target: fanoutSeconds ≤ 2 × singlePullSeconds, while one source needs ≥ 6×.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { NetLab } from '../helpers/netns.ts'
import { exec } from '../helpers/processes.ts'
import { agentCommand } from './agents.ts'
import { benchBundle } from './bundle.ts'
import type { BenchArgs } from './run.ts'

const log = (msg: string): void => { console.log(`[bundle-links] ${msg}`) }

/**
 * Cap every host's link at `mbit` both ways. tbf's bucket is 64 KiB: a few
 * milliseconds of line rate, so bursts cannot add up to a faster link.
 */
export async function capLinks (lab: NetLab, mbit: number): Promise<void> {
  const tbf = ['root', 'tbf', 'rate', `${mbit}mbit`, 'burst', '64kb', 'latency', '100ms']
  for (const [i, host] of lab.hosts.entries()) {
    await exec('tc', ['-n', host, 'qdisc', 'replace', 'dev', 'eth0', ...tbf])
    await exec('tc', ['-n', lab.switch, 'qdisc', 'replace', 'dev', `p${i + 1}`, ...tbf])
  }
}

/** The agents running now, for a signal to stop them before the namespaces go. */
let live: Cluster | undefined

interface Phase {
  lab: NetLab
  command: Cluster['command'] | undefined
  fleetDir: string
  zip: string
  digest: string
}

/** Seed on host 1, `pullers` agents on the next hosts; returns once every puller sees the seed's advert. */
async function mesh (p: Phase, pullers: number, share: boolean): Promise<{ cluster: Cluster, names: string[] }> {
  const cluster = await Cluster.create(p.command == null ? {} : { command: p.command })
  live = cluster
  try {
    const quiet = { logs: { stdout: false, level: 'warn' } }
    await cluster.addNode('seed', { role: 'server', fleetDir: p.fleetDir, bootstrap: [], config: quiet, netns: { ns: p.lab.hosts[0]!, address: p.lab.address(0) } })
    const names = Array.from({ length: pullers }, (_, i) => `p${i + 1}`)
    for (const [i, n] of names.entries()) {
      await cluster.addNode(n, { fleetDir: p.fleetDir, bootstrap: ['seed'], config: { ...quiet, bundles: { share } }, netns: { ns: p.lab.hosts[i + 1]!, address: p.lab.address(i + 1) } })
    }
    await cluster.start('seed', { wait: false })
    await Promise.all(names.map(async n => await cluster.start(n, { wait: false })))
    await Promise.all(['seed', ...names].map(async n => await cluster.waitReady(n, 180_000)))
    // published through the real CLI (the agents' own build of it) inside the seed's namespace, where its API listens
    const cli = p.command == null ? [process.execPath, CLI] : [p.command.exec, ...p.command.args]
    await exec('ip', ['netns', 'exec', p.lab.hosts[0]!, ...cli, 'bundle', 'publish', p.zip, '--api', cluster.node('seed').api, '--token-file', join(cluster.node('seed').dir, 'api.token')], { timeout: 600_000, env: { ...process.env, ...p.command?.env } })
    await Promise.all(names.map(async n => {
      await waitFor(async () => (await cluster.get(n, `/v1/registry?prefix=bundle/${p.digest}/`)).count > 0, `${n} to see the seed's advert`, 120_000, 250)
    }))
    return { cluster, names }
  } catch (err) {
    await cluster.close()
    live = undefined
    throw err
  }
}

/**
 * Start pulls on `names` at once. `seconds`: until the last one holds the
 * verified bundle; `fetchSeconds`: until the last one held every chunk (the
 * link-bound part, before the CPU-bound check of the whole file).
 */
async function pullAll (cluster: Cluster, names: string[], digest: string): Promise<{ seconds: number, fetchSeconds: number, each: number[] }> {
  const start = performance.now()
  const elapsed = (): number => (performance.now() - start) / 1000
  const fetched: number[] = []
  const each = await Promise.all(names.map(async n => {
    const { status, body } = await cluster.request(n, 'POST', `/v1/bundles/${digest}/pull`)
    if (status !== 202 && status !== 200) throw new Error(`pull on ${n}: ${status} ${JSON.stringify(body)}`)
    let allChunks: number | undefined
    // the probe relays one short request at a time, so poll rather than wait on the pull
    for (;;) {
      const view = await cluster.get(n, `/v1/bundles/${digest}`).catch(() => undefined)
      const t = view?.transfer
      if (allChunks == null && (view?.state === 'complete' || (t != null && t.chunks != null && t.chunksHave === t.chunks))) {
        allChunks = elapsed()
        fetched.push(allChunks)
      }
      if (view?.state === 'complete') return elapsed()
      if (t?.state === 'failed') throw new Error(`pull on ${n} failed: ${JSON.stringify(t.error)}`)
      if (elapsed() > 30 * 60) throw new Error(`pull on ${n} did not finish in 30 minutes`)
      await sleep(200)
    }
  }))
  return { seconds: Math.max(...each), fetchSeconds: Math.max(...fetched), each }
}

async function phase (p: Phase, pullers: number, share: boolean, what: string): Promise<{ seconds: number, fetchSeconds: number }> {
  const { cluster, names } = await mesh(p, pullers, share)
  try {
    const { seconds, fetchSeconds, each } = await pullAll(cluster, names, p.digest)
    log(`${what}: ${seconds.toFixed(2)} s, all chunks held after ${fetchSeconds.toFixed(2)} s (each done: ${each.map(s => s.toFixed(1)).join(', ')})`)
    return { seconds, fetchSeconds }
  } finally {
    await cluster.close()
    live = undefined
  }
}

export async function runOverLinks (args: BenchArgs): Promise<Record<string, unknown>> {
  const sizeMb = Number(args['size-mb'] ?? 64)
  const peers = Number(args.peers ?? 8)
  const linkMbit = Number(args['link-mbit'])
  if (!Number.isFinite(linkMbit) || linkMbit <= 0) throw new Error('--link-mbit must be a positive number')
  const available = await NetLab.available()
  if (!available.ok) throw new Error(`this benchmark needs network namespaces (root and iproute2): ${available.reason ?? 'ip netns add failed'}`)

  const root = await mkdtemp(join(tmpdir(), 'gatemesh-bench-links-'))
  const lab = await NetLab.create(peers + 1)
  // the namespaces are the machine's, not the process's: stop the agents and remove them on every way out
  const onSignal = (): void => { void (live?.close() ?? Promise.resolve()).finally(() => { void lab.destroy().finally(() => process.exit(130)) }) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    await capLinks(lab, linkMbit)
    log(`${peers + 1} hosts in network namespaces, each link capped at ${linkMbit} Mbit/s both ways (tc tbf)`)
    const { fleetDir, zip, digest, size } = await benchBundle(root, sizeMb)
    log(`line rate for one copy: ${(size * 8 / (linkMbit * 1e6)).toFixed(1)} s`)
    const command = await agentCommand(args.sources === true, log)
    const p: Phase = { lab, command, fleetDir, zip, digest }

    const loadAtStart = loadavg()[0]!
    const single = await phase(p, 1, false, 'one pull, one provider')
    const fanout = await phase(p, peers, true, `fan-out to ${peers}, peers share`)
    const oneSource = await phase(p, peers, false, `fan-out to ${peers}, one source`)
    const round = (n: number): number => Math.round(n * 100) / 100
    return {
      linkMbit,
      singlePullSeconds: round(single.seconds),
      fanoutSeconds: round(fanout.seconds),
      singleSourceFanoutSeconds: round(oneSource.seconds),
      scenario: 'bundle',
      sizeMb,
      peers,
      fanoutVsSingle: round(fanout.seconds / single.seconds),
      singleSourceVsSingle: round(oneSource.seconds / single.seconds),
      fetchSeconds: { singlePull: round(single.fetchSeconds), fanout: round(fanout.fetchSeconds), singleSourceFanout: round(oneSource.fetchSeconds) },
      loadavg: [round(loadAtStart), round(loadavg()[0]!)]
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await lab.destroy()
    await rm(root, { recursive: true, force: true })
  }
}
