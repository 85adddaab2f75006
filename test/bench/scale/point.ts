import { join } from 'node:path'
import { Cluster, sleep, waitFor } from '../../helpers/cluster.ts'
import { round } from '../stats.ts'
import { GeneratorProcess } from './driver.ts'
import { makeMembers, writeFleetFile, zoneLabels, zoneName, type MemberSpec } from './fleet.ts'
import type { AgentTarget } from './member.ts'
import { ownCpuSeconds } from '../idle-meter.ts'
import { ProbeRing } from '../../../node/membership/ring.ts'
import { rssMb, SocketMeter } from './measure.ts'
import { rates, zoneCount, zoneMembers, zoneSchedulers, type ScheduleInit } from './schedule.ts'
import type { AppCommand } from '../../helpers/app-bundle.ts'

export interface PointInit {
  peers: number
  seconds: number
  command: AppCommand
  /** health writes per member per minute beyond the periodic one (from the real check) @default 0 */
  extraHealthPerMin?: number
  /** the scheduler's lease renewal period (from the real check) @default main's renewIntervalMs (1000) */
  leaseRenewMs?: number
  /** members per zone, the agent included (zones of this size, the agent in the first). @default peers (one zone) */
  zoneSize?: number
  log: (msg: string) => void
}

export interface Point {
  peers: number
  zoneSize: number
  agentCpuPct: number
  bytesInPerSec: number
  bytesOutPerSec: number
  rssMb: number
  registryKeys: number
  [more: string]: unknown
}

/** Members per generator process: each holds its slice's proxy ports and live nodes. */
const MEMBERS_PER_GENERATOR = 2000
/** Others' connectors keep this many connections to the agent (main's connections.targetPeers). */
const CORE_CONNECTIONS = 6
/**
 * A delta reaches the agent's neighbours this far apart (uniform), as hops
 * through the fleet's mesh would spread it. Set by the real check: in a real
 * mesh of 50 on loopback each agent receives about as many bytes as it sends
 * (7.3 K / 7.2 K per second), since its neighbours mostly hold a delta before
 * the agent's forward reaches them and send theirs too; with 30 ms here the
 * agent's forwards beat most neighbours' copies (simulated over real: bytes in
 * 0.54×, out 1.77×), with 5 ms 0.78× and 1.15×.
 */
const SPREAD_MS = 5
/**
 * A member's connection to the agent lives this long after its last use.
 * Ring probing keeps a real member's connections (2 · probeSuccessors, and
 * its connector's) well under the limit of 32, so one made for a one-off
 * exchange would live on; closing it after 16 s idle overstates churn, if
 * anything.
 */
const LIFETIME_MS = 16_000

/** Prometheus text → the sum of one metric's series whose labels contain `labels`. */
export function metric (text: string, name: string, labels = ''): number {
  return sumMetric(text, name, l => l.includes(labels))
}

export function sumMetric (text: string, name: string, labelFilter: (labels: string) => boolean = () => true): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`).exec(line)
    if (m != null && labelFilter(m[1] ?? '')) sum += Number(m[2])
  }
  return sum
}

async function metricsText (api: string): Promise<string> {
  const res = await fetch(`${api}/metrics`, { signal: AbortSignal.timeout(30_000) })
  if (!res.ok) throw new Error(`GET /metrics: ${res.status}`)
  return await res.text()
}

/**
 * The N−1 simulated members: generator processes, each with a slice of the
 * members (their proxy ports, keys and live nodes).
 */
export class SimulatedFleet {
  readonly generators: GeneratorProcess[] = []
  readonly slices: Array<readonly [number, number]>
  readonly #root: string
  readonly #fleetDir: string
  readonly #log: (msg: string) => void
  readonly #schedule: ScheduleInit
  members: MemberSpec[] = []

  constructor (root: string, fleetDir: string, schedule: ScheduleInit, log: (msg: string) => void) {
    const others = schedule.others
    this.#schedule = schedule
    this.#root = root
    this.#fleetDir = fleetDir
    this.#log = log
    const g = Math.max(1, Math.ceil(others / MEMBERS_PER_GENERATOR))
    this.slices = Array.from({ length: g }, (_, i) => [Math.floor(i * others / g), Math.floor((i + 1) * others / g)] as const)
  }

  get coreEach (): number {
    return Math.ceil(CORE_CONNECTIONS / this.slices.length)
  }

  /** Start the generator processes (each binds its members' proxy ports) and issue the members' certificates. */
  async listen (): Promise<void> {
    for (const [i, [from, to]] of this.slices.entries()) this.generators.push(new GeneratorProcess(this.#root, i, to - from))
    const ports = (await Promise.all(this.generators.map(async gen => await gen.ports))).flat()
    this.#log(`${this.generators.length} generator process(es) listening for ${ports.length} members; issuing certificates`)
    this.members = await makeMembers(this.#fleetDir, ports, this.#schedule)
  }

  /** Members the node under test bootstraps from: the first core members of every slice (the agent's zone comes first). */
  bootstrap (): string[] {
    return this.slices.flatMap(([from]) => this.members.slice(from, from + Math.min(2, this.coreEach))).map(m => `/ip4/127.0.0.1/tcp/${m.port}/p2p/${m.id}`)
  }

  async begin (target: AgentTarget, init: ScheduleInit): Promise<void> {
    // the members that hold the node under test among their ring successors probe it (node/membership/ring.ts)
    const index = new Map(this.members.map((m, i) => [m.id, i]))
    const probers = new ProbeRing().predecessors(target.id, [target.id, ...index.keys()], init.probeSuccessors ?? 3).map(id => index.get(id)!)
    const schedule: ScheduleInit = { probers, ...init }
    const fleetFile = join(this.#root, 'fleet.json')
    await writeFleetFile(fleetFile, this.#fleetDir, this.members, Date.now())
    const of = this.generators.length
    await Promise.all(this.generators.map(async (gen, index) => {
      const [from, to] = this.slices[index]!
      await gen.begin({ fleetFile, from, to, agent: target, core: this.coreEach, schedule, seed: 1, index, of, spreadMs: SPREAD_MS, lifetimeMs: LIFETIME_MS })
    }))
  }

  async stats (): Promise<Array<Record<string, unknown>>> {
    return await Promise.all(this.generators.map(async gen => await gen.stats().catch(err => ({ error: err.message }))))
  }

  async stop (): Promise<void> {
    await Promise.all(this.generators.map(async gen => { await gen.stop().catch(() => {}) }))
  }
}

/**
 * One simulated point: ONE real agent (the app bundle) in a fleet of
 * `peers`, the other peers − 1 played by generator processes over real
 * libp2p. Warm-up ends when the agent holds every member's registry
 * entries and sees all of them alive; then it is measured from outside for
 * `seconds`.
 */
export async function simulatedPoint (init: PointInit): Promise<Point> {
  const { peers, seconds, log } = init
  const others = peers - 1
  const zoneSize = Math.min(init.zoneSize ?? peers, peers)
  const cluster = await Cluster.create({ command: init.command })
  const schedule: ScheduleInit = { others, zoneSize, extraHealthPerMin: init.extraHealthPerMin ?? 0, ...(init.leaseRenewMs == null ? {} : { leaseRenewMs: init.leaseRenewMs }) }
  const fleet = new SimulatedFleet(cluster.root, cluster.fleetDir, schedule, log)
  try {
    await fleet.listen()
    const zones = zoneCount(schedule)
    const agent = await cluster.addNode('agent', { role: 'gateway', labels: zoneLabels(zoneName(0, zones)), bootstrap: fleet.bootstrap(), config: { logs: { stdout: false, level: 'info' } } })
    await fleet.begin({ id: agent.peerId, addr: agent.multiaddr }, schedule)
    log(`N=${peers}: generators ready; starting the agent`)
    const t0 = performance.now()
    await cluster.start('agent')
    const pid = agent.child!.pid!
    // node records of everyone, health and scheduler endorsements (leases are zone-local) of the zone mates, a summary per zone,
    // and the fleet-wide endorsement of every member that is not its zone's scheduler
    const wantKeys = others + 2 * zoneMembers(schedule, 0)[1] + zones + others - zoneSchedulers(schedule).length
    await waitFor(async () => {
      const text = await metricsText(agent.api)
      const keys = metric(text, 'gatemesh_registry_keys')
      const alive = metric(text, 'gatemesh_members', 'state="alive"')
      log(`N=${peers}: warm-up: registry ${keys}/${wantKeys}+ keys, ${alive}/${peers} alive`)
      return keys >= wantKeys && alive >= peers
    }, `the agent to learn all ${peers} members`, 60_000 + others * 200, 5000)
    const warmupMs = performance.now() - t0
    log(`N=${peers}: warm after ${(warmupMs / 1000).toFixed(0)} s; settling 15 s, then measuring ${seconds} s`)
    await sleep(15_000)

    const meter = new SocketMeter([pid], [agent.apiPort])
    await meter.reset()
    meter.start()
    const before = await metricsText(agent.api)
    const cpu0 = await ownCpuSeconds(pid)
    const w0 = performance.now()
    await sleep(seconds * 1000)
    const cpu1 = await ownCpuSeconds(pid)
    const w1 = performance.now()
    await meter.stop()
    await meter.sample()
    const after = await metricsText(agent.api)
    const elapsed = (w1 - w0) / 1000
    const bytes = meter.totals().get(pid)!
    // after the window, and allowed to be slow: a busy agent listing thousands of members takes its time
    const getJson = async (path: string): Promise<any> => await fetch(agent.api + path, { signal: AbortSignal.timeout(60_000) }).then(async r => await r.json()).catch(() => undefined)
    const status = await getJson('/v1/status') as { members?: unknown[] } | undefined
    const scheduler = await getJson('/v1/scheduler') as Record<string, unknown> | undefined
    const genStats = await fleet.stats()
    const delta = (name: string, filter?: (l: string) => boolean): number => (sumMetric(after, name, filter) - sumMetric(before, name, filter)) / elapsed
    const point: Point = {
      peers,
      zoneSize,
      zones,
      agentCpuPct: round(100 * (cpu1 - cpu0) / elapsed, 2),
      bytesInPerSec: Math.round(bytes.received / elapsed),
      bytesOutPerSec: Math.round(bytes.sent / elapsed),
      rssMb: round(await rssMb(pid)),
      registryKeys: metric(after, 'gatemesh_registry_keys'),
      membersAlive: metric(after, 'gatemesh_members', 'state="alive"'),
      membersListed: status?.members?.length ?? null,
      gossipInPerSec: round(delta('gatemesh_gossip_messages_in_total'), 2),
      membershipBytesInPerSec: Math.round(delta('gatemesh_membership_bytes_total', l => l.includes('direction="in"'))),
      membershipBytesOutPerSec: Math.round(delta('gatemesh_membership_bytes_total', l => l.includes('direction="out"'))),
      syncsPerSec: round(delta('gatemesh_registry_syncs_total'), 3),
      // new connections a second (each one a TCP handshake, Noise, identify and a certificate exchange)
      connectionsOutPerSec: round(delta('gatemesh_peer_connections_total', l => l.includes('direction="out"')), 3),
      connectionsInPerSec: round(delta('gatemesh_peer_connections_total', l => l.includes('direction="in"')), 3),
      peersConnected: metric(after, 'gatemesh_peers'),
      rejectedPerSec: round(delta('gatemesh_rejected_messages_total'), 3),
      // the agent's zone's scheduler (member 0) should lead it, established by the members' endorsements
      schedulerIsAgent: scheduler?.self ?? null,
      schedulerEstablished: scheduler?.established ?? null,
      warmupSec: round(warmupMs / 1000, 0),
      measuredSec: round(elapsed, 1),
      expected: rates(schedule),
      generators: genStats
    }
    log(`N=${peers}: ${JSON.stringify(point)}`)
    return point
  } finally {
    await fleet.stop()
    await cluster.close()
  }
}
