import { join } from 'node:path'
import { Cluster, sleep, waitFor } from '../../helpers/cluster.ts'
import { CoordinatorProcess } from '../../helpers/coordinator-process.ts'
import { round } from '../stats.ts'
import { ownCpuSeconds } from '../idle-meter.ts'
import { rssMb, SocketMeter } from './measure.ts'
import { metric, SimulatedFleet } from './point.ts'
import type { AppCommand } from '../../helpers/app-bundle.ts'

const PASSWORD = 'bench-admin-password'

export interface CoordinatorPointInit {
  peers: number
  seconds: number
  /** unused: the coordinator ships as the npm package and runs from its sources */
  command?: AppCommand
  log: (msg: string) => void
}

/**
 * One real coordinator (its embedded agent is a fleet member like any
 * other) in a simulated fleet of `peers` − 1 members, with one dashboard
 * client reading `/api/v1/events` (a snapshot, then at most one delta a
 * second). Measured: the coordinator's CPU and the bytes of that stream
 * per second after the snapshot.
 */
export async function coordinatorPoint (init: CoordinatorPointInit): Promise<Record<string, unknown>> {
  const { peers, seconds, log } = init
  const others = peers - 1
  const cluster = await Cluster.create({ sources: true })
  // one zone: a coordinator follows every zone anyway, so it receives every member's health either way
  const fleet = new SimulatedFleet(cluster.root, cluster.fleetDir, { others }, log)
  const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
  const abort = new AbortController()
  try {
    await coordinator.addUser('admin', PASSWORD, { admin: true })
    await fleet.listen()
    coordinator.init.bootstrap = fleet.bootstrap()
    const runtime = await coordinator.start()
    await fleet.begin({ id: runtime.peerId, addr: coordinator.multiaddr }, { others })
    const token = await coordinator.login('admin', PASSWORD)
    const t0 = performance.now()
    await waitFor(async () => {
      const nodes = (await coordinator.request('GET', '/api/v1/nodes', { token })).body?.nodes as Array<{ state: string }> | undefined
      const alive = nodes?.filter(n => n.state === 'alive').length ?? 0
      log(`coordinator N=${peers}: warm-up: ${alive}/${peers} alive in /api/v1/nodes`)
      return alive >= peers
    }, `the coordinator to list all ${peers} nodes alive`, 120_000 + others * 300, 5000)
    log(`coordinator N=${peers}: warm after ${((performance.now() - t0) / 1000).toFixed(0)} s; settling 15 s`)
    await sleep(15_000)

    // the dashboard: one event stream, read as the dashboard reads it (fetch, bearer token)
    let snapshotBytes = 0
    let streamBytes = 0
    let deltas = 0
    let counting = false
    const res = await fetch(`${coordinator.url}/api/v1/events`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal })
    if (!res.ok || res.body == null) throw new Error(`GET /api/v1/events: ${res.status}`)
    const reading = (async () => {
      const decoder = new TextDecoder()
      let buffer = ''
      for await (const chunk of res.body!) {
        if (counting) streamBytes += chunk.byteLength
        else snapshotBytes += chunk.byteLength
        buffer += decoder.decode(chunk, { stream: true })
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          if (/^event: snapshot$/m.test(block)) counting = true
          if (/^event: delta$/m.test(block) && counting) deltas++
        }
      }
    })().catch(() => {})
    await waitFor(() => counting, 'the event stream snapshot', 60_000, 50)
    await sleep(2000)
    const pid = runtime.pid
    const meter = new SocketMeter([pid], [coordinator.httpPort])
    await meter.reset()
    meter.start()
    const metricsBefore = (await coordinator.request('GET', '/metrics', { token })).text
    const cpu0 = await ownCpuSeconds(pid)
    const bytes0 = streamBytes
    const deltas0 = deltas
    const w0 = performance.now()
    await sleep(seconds * 1000)
    const cpu1 = await ownCpuSeconds(pid)
    const elapsed = (performance.now() - w0) / 1000
    const sse = streamBytes - bytes0
    await meter.stop()
    await meter.sample()
    const p2p = meter.totals().get(pid)!
    const metrics = (await coordinator.request('GET', '/metrics', { token })).text
    abort.abort()
    await reading
    const result = {
      peers,
      cpuPct: round(100 * (cpu1 - cpu0) / elapsed, 2),
      sseBytesPerSecPerClient: Math.round(sse / elapsed),
      deltasPerSec: round((deltas - deltas0) / elapsed, 2),
      snapshotBytes,
      rssMb: round(await rssMb(pid)),
      meshBytesInPerSec: Math.round(p2p.received / elapsed),
      meshBytesOutPerSec: Math.round(p2p.sent / elapsed),
      gossipInPerSec: round((metric(metrics, 'gatemesh_gossip_messages_in_total') - metric(metricsBefore, 'gatemesh_gossip_messages_in_total')) / elapsed, 2),
      measuredSec: round(elapsed, 1),
      generators: await fleet.stats()
    }
    log(`coordinator: ${JSON.stringify(result)}`)
    return result
  } finally {
    abort.abort()
    await fleet.stop()
    await coordinator.stop()
    await cluster.close()
  }
}
