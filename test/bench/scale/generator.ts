/**
 * One load-generator process of the `scale` bench: plays a slice of the
 * N−1 fleet members around one agent under test. Run by test/bench/scale.ts
 * (never by hand); talks to it in JSON lines:
 *   argv: --count C                 → stdout {"ports":[…]} (one proxy port per member, bound now)
 *   stdin {"start":{…}}             → stdout {"ready":true}
 *   stdin {"stats":true}            → stdout {"stats":{…}}
 * Every member answers on its proxy port; a real libp2p node for it
 * (member.ts) is started when someone dials that port or when the member
 * has something to send the agent, and stopped when a real member's
 * connection would have been pruned. What the members send follows
 * schedule.ts: the zone mates' health reaches the agent inside its zone's
 * scheduler's renewal deltas, and that scheduler (member 0) answers the
 * agent's own health relay (member.ts).
 */
import { createServer, connect, type Server, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import { deltaCodec, MAX_DELTA_ENTRIES, REGISTRY_TOPIC } from '../../../protocols/registry/delta.ts'
import { zoneSummaryKey, zoneTopic } from '../../../protocols/registry/zones.ts'
import { schedulerKey } from '../../../node/scheduler/keys.ts'
import { contentMessageId } from '../../../node/mesh/libp2p.ts'
import { events, type ScheduleInit, type ScheduledEvent } from './schedule.ts'
import { FleetState, healthValue, summaryValue } from './fleet.ts'
import { SimNode, type AgentTarget } from './member.ts'

export interface StartMessage {
  fleetFile: string
  /** this process's members: indexes [from, to) of the fleet file */
  from: number
  to: number
  agent: AgentTarget
  /** members of this slice that keep a connection to the agent (others' connectors) */
  core: number
  schedule: ScheduleInit
  seed: number
  /** this process's index among `of` generator processes */
  index: number
  of: number
  /** a delta reaches the agent's neighbours this far apart (ms, uniform) */
  spreadMs: number
  /** a member's connection to the agent lives this long after its last use (real members prune past 32) */
  lifetimeMs: number
}

const stats = { nodesStarted: 0, nodesStopped: 0, probes: 0, probesOk: 0, probesFailed: 0, deltas: 0, healthWrites: 0, relayed: 0, relayRefused: 0, copiesSent: 0, copiesSkipped: 0, syncs: 0, syncsFailed: 0, pushPulls: 0, pushPullsFailed: 0, errors: 0, errorsByMessage: {} as Record<string, number> }
// SwimLink rejects a request's pending reply when the link closes while the request is still being
// written, before anyone awaits that reply: an unhandled rejection (the agent logs the same one).
// Counted here; the generator must keep playing its members.
process.on('unhandledRejection', err => { note(err) })

const count = Number(process.argv[process.argv.indexOf('--count') + 1])
const listeners: Server[] = []
const ports: number[] = []
const pending: Socket[][] = []

for (let i = 0; i < count; i++) {
  const server = createServer(socket => { void route(i, socket) })
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const address = server.address()
  if (address == null || typeof address === 'string') throw new Error('proxy listener has no port')
  listeners.push(server)
  ports.push(address.port)
  pending.push([])
}
say({ ports })

let start: StartMessage | undefined
let fleet: FleetState | undefined
const live = new Map<number, Promise<SimNode>>()
const settled = new WeakMap<Promise<SimNode>, SimNode>()

function say (msg: unknown): void {
  process.stdout.write(JSON.stringify(msg) + '\n')
}

function note (err: unknown): void {
  stats.errors++
  const msg = String((err as Error)?.message ?? err).slice(0, 120)
  if (msg in stats.errorsByMessage || Object.keys(stats.errorsByMessage).length < 20) stats.errorsByMessage[msg] = (stats.errorsByMessage[msg] ?? 0) + 1
}

/** The agent handed its health to the simulated scheduler of its zone (accepted), or was refused. */
function onRelay (accepted: boolean): void {
  if (accepted) stats.relayed++
  else stats.relayRefused++
}

/** Slice-local index i ↔ fleet index start.from + i. */
async function node (i: number, core = false): Promise<SimNode> {
  let n = live.get(i)
  if (n == null) {
    const s = start!
    n = SimNode.start(fleet!.members[s.from + i]!, fleet!, s.agent, core, onRelay)
    stats.nodesStarted++
    live.set(i, n)
    const started = n
    n.then(x => { settled.set(started, x) }, err => { live.delete(i); note(err) })
  }
  return await n
}

/** A connection to member i's identity: bring its node up, then splice the bytes through. */
async function route (i: number, socket: Socket): Promise<void> {
  socket.on('error', () => {})
  if (start == null) {
    socket.destroy()
    return
  }
  try {
    const n = await node(i)
    n.usedAt = performance.now()
    const upstream = connect(n.port, '127.0.0.1')
    upstream.on('error', () => { socket.destroy() })
    socket.on('close', () => { upstream.destroy() })
    upstream.on('close', () => { socket.destroy() })
    socket.pipe(upstream).pipe(socket)
  } catch (err) {
    note(err)
    socket.destroy()
  }
}

function liveNodes (): SimNode[] {
  const out: SimNode[] = []
  for (const [, p] of live) {
    const n = settled.get(p)
    if (n != null) out.push(n)
  }
  return out
}

async function onEvent (e: ScheduledEvent): Promise<void> {
  const s = start!
  const f = fleet!
  if (e.kind === 'health' || e.kind === 'lease' || e.kind === 'summary') {
    // every process signs the same bytes and passes them on through its own members, as the fleet's gossip would reach them
    const m = f.members[e.member]!
    const ts = f.epoch + Math.floor(e.at)
    const entries = [e.kind === 'health'
      ? await f.sign(m, `health/${m.id}`, healthValue(e.member, e.seq, ts), ts)
      : e.kind === 'lease'
        ? await f.sign(m, schedulerKey(m.zone, m.id), { term: 1, leaseMs: 3000, since: f.epoch - 60_000 }, ts)
        : await f.sign(m, zoneSummaryKey(m.zone, m.id), summaryValue(m, ts), ts)]
    // a renewal carries the health its zone mates handed the scheduler since its last one (protocols/registry-relay),
    // each entry signed by its own writer, at its own time
    entries.push(...await Promise.all((e.health ?? []).map(async w => {
      const mate = f.members[w.member]!
      const at = f.epoch + Math.floor(w.at)
      return await f.sign(mate, `health/${mate.id}`, healthValue(w.member, w.seq, at), at)
    })))
    for (const entry of entries) f.put(entry)
    stats.healthWrites += (e.kind === 'health' ? 1 : 0) + (e.health?.length ?? 0)
    // health and leases are zone-local: they travel on the agent's zone topic (only its zone mates send it either)
    const topic = e.kind === 'summary' ? REGISTRY_TOPIC : zoneTopic(f.agentZone)
    // the renewal first; what a delta cannot hold goes in the next (the scheduler's gossip batches so)
    for (let i = 0; i < entries.length; i += MAX_DELTA_ENTRIES) {
      const data = deltaCodec.encode({ entries: entries.slice(i, i + MAX_DELTA_ENTRIES) })
      stats.deltas++
      // Only a neighbour whose gossipsub mesh (for that topic) holds the agent forwards it whole copies;
      // the others would tell it message ids (IHAVE) now and then, which is not simulated (tens of bytes
      // per id). Publishing through them would be wrong: with no other peer, gossipsub tops their publish
      // up to the agent, a copy no real member would send.
      const id = contentMessageId({ topic, data })
      for (const n of liveNodes()) {
        if (!n.meshesAgent(topic)) {
          n.markSeen(id)
          continue
        }
        setTimeout(() => {
          void n.publish(topic, data).then(sent => { if (sent) stats.copiesSent++; else stats.copiesSkipped++ })
        }, Math.random() * s.spreadMs)
      }
    }
    return
  }
  if (e.member % s.of !== s.index) return
  const i = Math.floor(e.member / s.of) % (s.to - s.from)
  if (e.kind === 'probe') {
    stats.probes++
    try {
      const n = await node(i)
      if (await n.probe()) stats.probesOk++
      else stats.probesFailed++
    } catch (err) {
      stats.probesFailed++
      note(err)
    }
    return
  }
  // exchanges start over a connection a member already has, as members' timers pick a connected peer
  const connected = liveNodes().filter(n => n.connected())
  const n = connected.length > 0 ? connected[Math.floor(Math.random() * connected.length)]! : await node(i).catch(() => undefined)
  if (n == null) return
  if (e.kind === 'pushPull') {
    stats.pushPulls++
    await n.pushPull().catch(err => { stats.pushPullsFailed++; note(err) })
  } else {
    stats.syncs++
    await n.sync().catch(err => { stats.syncsFailed++; note(err) })
  }
}

function runSchedule (): void {
  const s = start!
  const f = fleet!
  let from = Date.now() - f.epoch
  const tick = (): void => {
    const to = from + 1000
    for (const e of events(s.schedule, from, to, s.seed)) {
      setTimeout(() => { onEvent(e).catch(note) }, Math.max(0, f.epoch + e.at - Date.now()))
    }
    from = to
    setTimeout(tick, Math.max(0, f.epoch + from - 500 - Date.now()))
  }
  tick()
}

const connecting = new WeakSet<SimNode>()

/** Core members keep their connection; the rest go when a real member's connection would be pruned. */
function housekeeping (): void {
  const s = start!
  const now = performance.now()
  for (const [i, p] of live) {
    const n = settled.get(p)
    if (n == null) continue
    if (n.core) {
      if (!n.connected() && !connecting.has(n)) {
        // at most one dial a second per core member (the agent may not be up yet)
        connecting.add(n)
        n.connect().catch(note).finally(() => { setTimeout(() => { connecting.delete(n) }, 1000) })
      }
      continue
    }
    if (now - n.usedAt > s.lifetimeMs) {
      live.delete(i)
      stats.nodesStopped++
      void n.stop()
    }
  }
}

const lines = createInterface({ input: process.stdin })
lines.on('line', line => {
  const msg = JSON.parse(line) as { start?: StartMessage, stats?: boolean }
  if (msg.start != null) {
    begin(msg.start).then(() => { say({ ready: true }) }, err => { say({ error: String(err?.stack ?? err) }) })
  } else if (msg.stats === true) {
    say({ stats: { ...stats, live: live.size, connected: liveNodes().filter(n => n.connected()).length, meshing: liveNodes().filter(n => n.meshesAgent(REGISTRY_TOPIC)).length } })
  }
})
lines.on('close', () => { void shutdown() })
process.on('SIGTERM', () => { void shutdown() })

async function begin (s: StartMessage): Promise<void> {
  fleet = await FleetState.load(s.fleetFile)
  start = s
  for (let i = 0; i < s.core && i < s.to - s.from; i++) node(i, true).catch(() => {})
  setInterval(housekeeping, 250).unref()
  runSchedule()
}

async function shutdown (): Promise<void> {
  for (const l of listeners) l.close()
  await Promise.all([...live.values()].map(async p => { await (await p.catch(() => undefined))?.stop() }))
  process.exit(0)
}
