/**
 * What N−1 idle fleet members send one agent, as a schedule: pure logic,
 * shared by the load generator (which follows it) and the unit test (which
 * checks its rates). Every figure here comes from main's defaults:
 * - health: each member writes `health/<self>` at least every
 *   `membership.health.maxIntervalMs` (60 s), more often when its CPU, memory
 *   or load moves (`extraHealthPerMin`, measured in the real mesh: on a busy
 *   box load moves often);
 * - the agent's zone's scheduler renews its lease claim every
 *   `renewIntervalMs` (1000 ms);
 * - health goes through the zone's scheduler (protocols/registry-relay): a
 *   member hands its signed `health/<self>` entry to its zone's scheduler,
 *   which sends it with its next lease renewal, in the same delta. So a
 *   zone mate's health write is no event of its own: each of the agent's
 *   zone's renewals (a 'lease' event at `at`) carries, in `health`, the
 *   writes of the scheduler's zone mates that came due in (at − renewal
 *   period, at], each still signed by its own writer. Only the scheduler's
 *   own health, which it has no one to hand to, is a 'health' event (a
 *   delta of its own). The agent's zone always has a scheduler when it has
 *   mates (its first member), so no mate's write is left without a renewal;
 *   rates are those of writes (entries), not of deltas;
 * - SWIM: every member probes one member per `probeIntervalMs`, round robin
 *   over its `membership.probeSuccessors` (3) ring successors, so the agent
 *   is probed by its 3 ring predecessors (`probers`), each once every 3
 *   periods: once per period in all, over connections they hold. Without
 *   `probers` (`probeSuccessors` 0, SWIM's order) every member probes a given
 *   other member once per (N−1) periods, which also makes once per period;
 * - push-pull: each member exchanges full membership with one connected
 *   member per `pushPullIntervalMs` × scale(N) (memberlist's scale);
 * - registry anti-entropy: each member syncs with one connected member every
 *   `registry.syncIntervalMs` (15 s).
 * Zones (`zoneSize` Z): the agent's zone is members [0, Z − 1) and the agent;
 * the other members form zones of Z after it. Only the agent's zone mates
 * send it health and lease renewals (zone-local, on their zone's topic):
 * its zone's scheduler (the zone's first member) renews its lease there,
 * carrying its zone mates' health. Every zone's scheduler writes its zone's
 * summary (`zones.summaryMaxIntervalMs`, 30 s, in an idle fleet)
 * fleet-wide, so those reach the agent from every zone.
 */
import { prng } from '../../../sensors/simulated.ts'
import { DEFAULT_RENEW_INTERVAL_MS } from '../../../node/scheduler/election-timing.ts'

export interface ScheduleInit {
  /** members other than the agent */
  others: number
  /** @default 60000 */
  healthMaxIntervalMs?: number
  /** health writes per member per minute on top of the periodic one (changes). @default 0 */
  extraHealthPerMin?: number
  /** @default 1000 */
  probeIntervalMs?: number
  /**
   * The members whose ring successors include the agent (its ring
   * predecessors): they probe it, each once every min(probeSuccessors,
   * others) periods. @default every member, each once every others periods
   */
  probers?: number[]
  /** @default 3, main's membership.probeSuccessors */
  probeSuccessors?: number
  /** @default 30000 */
  pushPullIntervalMs?: number
  /** @default 15000 */
  syncIntervalMs?: number
  /** the scheduler's renewal period. @default DEFAULT_RENEW_INTERVAL_MS (main's renewIntervalMs, 1000) */
  leaseRenewMs?: number
  /** members per zone, the agent included. @default others + 1 (one zone) */
  zoneSize?: number
  /** a zone's scheduler writes its summary at least this often. @default 30000 */
  summaryMaxIntervalMs?: number
}

export interface Rates {
  /**
   * registry writes (entries) per second that reach the agent by gossip;
   * its zone mates' health writes arrive inside its zone's lease renewal
   * deltas (one delta per renewal), not as deltas of their own
   */
  healthWritesPerSec: number
  leaseWritesPerSec: number
  summaryWritesPerSec: number
  /** SWIM pings the agent receives per second from others */
  probesInPerSec: number
  pushPullsInPerSec: number
  syncsInPerSec: number
}

/** memberlist's pushPullScale: one more interval per doubling past 32 members. */
export function pushPullScale (n: number): number {
  return n <= 32 ? 1 : Math.ceil(Math.log2(n) - Math.log2(32)) + 1
}

function filled (init: ScheduleInit): Required<ScheduleInit> {
  return {
    others: init.others,
    healthMaxIntervalMs: init.healthMaxIntervalMs ?? 60_000,
    extraHealthPerMin: init.extraHealthPerMin ?? 0,
    probeIntervalMs: init.probeIntervalMs ?? 1000,
    probers: init.probers ?? [],
    probeSuccessors: init.probeSuccessors ?? 3,
    pushPullIntervalMs: init.pushPullIntervalMs ?? 30_000,
    syncIntervalMs: init.syncIntervalMs ?? 15_000,
    leaseRenewMs: init.leaseRenewMs ?? DEFAULT_RENEW_INTERVAL_MS,
    zoneSize: Math.max(1, Math.min(init.zoneSize ?? init.others + 1, init.others + 1)),
    summaryMaxIntervalMs: init.summaryMaxIntervalMs ?? 30_000
  }
}

/** The members of one zone, as fleet indexes [from, to): zone 0 is the agent's (it is the zone's Z-th member). */
export function zoneMembers (init: ScheduleInit, zone: number): [number, number] {
  const s = filled(init)
  if (zone === 0) return [0, Math.min(s.others, s.zoneSize - 1)]
  const from = s.zoneSize - 1 + (zone - 1) * s.zoneSize
  return [Math.min(from, s.others), Math.min(from + s.zoneSize, s.others)]
}

/** How many zones the fleet has (the agent's included). */
export function zoneCount (init: ScheduleInit): number {
  const s = filled(init)
  return s.others === 0 ? 1 : 1 + Math.ceil(Math.max(0, s.others - (s.zoneSize - 1)) / s.zoneSize)
}

/** The zone of fleet member `m`. */
export function zoneOfMember (init: ScheduleInit, m: number): number {
  const s = filled(init)
  return m < s.zoneSize - 1 ? 0 : 1 + Math.floor((m - (s.zoneSize - 1)) / s.zoneSize)
}

/** Each zone's scheduler: its first member (zone 0's is member 0, when the agent has zone mates). */
export function zoneSchedulers (init: ScheduleInit): number[] {
  const out: number[] = []
  for (let z = 0; z < zoneCount(init); z++) {
    const [from, to] = zoneMembers(init, z)
    if (to > from) out.push(from)
  }
  return out
}

/** Expected per-second arrivals at one agent from N−1 others. */
export function rates (init: ScheduleInit): Rates {
  const s = filled(init)
  const n = s.others + 1
  const mates = s.others > 0 ? zoneMembers(s, 0)[1] : 0
  const schedulers = s.others > 0 ? zoneSchedulers(s).length : 0
  return {
    // only the agent's zone mates' health reaches it
    healthWritesPerSec: mates * (1000 / s.healthMaxIntervalMs + s.extraHealthPerMin / 60),
    // and only its own zone's scheduler's lease (none when it is alone in its zone: then it is the scheduler)
    leaseWritesPerSec: mates > 0 ? 1000 / s.leaseRenewMs : 0,
    summaryWritesPerSec: schedulers * 1000 / s.summaryMaxIntervalMs,
    // each other member probes the agent once per (N−1) of its periods
    probesInPerSec: s.others > 0 ? 1000 / s.probeIntervalMs : 0,
    // each member push-pulls (and syncs) one peer per interval; the agent is that peer for ~1 in (its peers' peers)
    // members, which over a fleet of equal nodes is one exchange per interval
    pushPullsInPerSec: s.others > 0 ? 1000 / (s.pushPullIntervalMs * pushPullScale(n)) : 0,
    syncsInPerSec: s.others > 0 ? 1000 / s.syncIntervalMs : 0
  }
}

export type EventKind = 'health' | 'lease' | 'summary' | 'probe' | 'pushPull' | 'sync'

/** One health write: `member` writes `health/<self>` (its `seq`-th) at `at` ms after the epoch. */
export interface HealthWrite {
  at: number
  member: number
  seq: number
}

export interface ScheduledEvent {
  /** ms after the schedule's epoch */
  at: number
  kind: EventKind
  /** index of the member that acts (0 ≤ member < others) */
  member: number
  /** the member's write counter for this kind (health, lease): makes the written value deterministic */
  seq: number
  /**
   * A renewal of the agent's zone's scheduler: the health writes of its zone
   * mates that came due since its previous renewal, in (at − leaseRenewMs,
   * at], ordered by time, which it relays in the renewal's delta (after
   * the lease entry). Possibly empty; absent on every other event.
   */
  health?: HealthWrite[]
}

/** Per-member phases, drawn from `seed` in one fixed order: every process gets the same. */
function phases (s: Required<ScheduleInit>, seed: number): { health: number[], probe: number[] } {
  const phase = prng(seed)
  const health: number[] = []
  const probe: number[] = []
  for (let m = 0; m < s.others; m++) {
    health.push(phase())
    probe.push(phase())
  }
  return { health, probe }
}

/** Events `periodMs` apart from `offset` (k = 0, 1, …) that fall in [fromMs, toMs); k is their seq. */
function periodic (kind: EventKind, member: number, periodMs: number, offset: number, fromMs: number, toMs: number, out: ScheduledEvent[]): void {
  const first = Math.max(0, Math.ceil((fromMs - offset) / periodMs))
  for (let k = first; offset + k * periodMs < toMs; k++) out.push({ at: offset + k * periodMs, kind, member, seq: k })
}

/**
 * The events that arrive as a Poisson process (health changes on top of the
 * periodic writes, exchanges others start) in [fromMs, toMs): drawn per
 * whole second from `seed` and the second, so any window split gives the
 * same events.
 */
function poissonEvents (s: Required<ScheduleInit>, fromMs: number, toMs: number, seed: number, out: ScheduledEvent[]): void {
  const r = rates(s)
  const mates = zoneMembers(s, 0)[1]
  const poisson = [
    ['health', (mates * s.extraHealthPerMin) / 60],
    ['pushPull', r.pushPullsInPerSec],
    ['sync', r.syncsInPerSec]
  ] as const
  for (let sec = Math.floor(fromMs / 1000); sec * 1000 < toMs; sec++) {
    const draw = prng(seed * 7919 + sec * 104729)
    for (const [kind, perSec] of poisson) {
      if (perSec <= 0) continue
      let t = sec * 1000 - Math.log(1 - draw()) * 1000 / perSec
      while (t < (sec + 1) * 1000) {
        // extra health comes from the agent's zone mates; exchanges from anyone
        const member = Math.floor(draw() * (kind === 'health' ? mates : s.others))
        // extra health writes count after the periodic ones: seq well above any periodic k
        if (t >= fromMs && t < toMs) out.push({ at: t, kind, member, seq: kind === 'health' ? 1_000_000 + Math.floor(t) : 0 })
        t += -Math.log(1 - draw()) * 1000 / perSec
      }
    }
  }
}

/** Every health write of the agent's zone mates in [fromMs, toMs), periodic and changes, ordered by time. */
export function healthWrites (init: ScheduleInit, fromMs: number, toMs: number, seed = 1, jitter?: number[]): HealthWrite[] {
  const s = filled(init)
  const out: ScheduledEvent[] = []
  if (s.others === 0 || toMs <= fromMs) return []
  const mates = zoneMembers(s, 0)[1]
  const health = jitter ?? phases(s, seed).health
  for (let m = 0; m < mates; m++) periodic('health', m, s.healthMaxIntervalMs, ((m + health[m]!) / mates) * s.healthMaxIntervalMs, fromMs, toMs, out)
  poissonEvents(s, fromMs, toMs, seed, out)
  return out.filter(e => e.kind === 'health').map(({ at, member, seq }) => ({ at, member, seq })).sort(byTime)
}

const byTime = (a: { at: number, member: number, seq: number }, b: { at: number, member: number, seq: number }): number =>
  a.at - b.at || a.member - b.member || a.seq - b.seq

/**
 * Every event in [fromMs, toMs) after the epoch, ordered by time. Periodic
 * writes and probes have a fixed phase per member (spread evenly, then
 * jittered by `seed`), so any process with the same init and seed computes
 * the same events: generator processes that each hold a slice of the
 * members agree on who writes what and when. Changes on top of the periodic
 * health writes and the exchanges initiated by others are Poisson, drawn
 * per window from `seed` and the window start.
 * Each zone's first member is its scheduler: it writes the zone's summary,
 * and renews its lease in its zone. Only the agent's zone mates write
 * health and leases the agent receives; the mates' health rides on their
 * scheduler's renewals (each 'lease' event's `health`, decided by the
 * writes' times alone, so every process and every window split agrees),
 * and only the scheduler's own health comes as 'health' events.
 */
export function events (init: ScheduleInit, fromMs: number, toMs: number, seed = 1): ScheduledEvent[] {
  const s = filled(init)
  const out: ScheduledEvent[] = []
  if (s.others === 0 || toMs <= fromMs) return out
  const phase = phases(s, seed)
  // the agent is probed by each of its ring predecessors once every min(k, N−1) periods (or, without
  // a ring, by member m once every (N−1) periods), the probers' phases spread over that round
  const ring = init.probers != null
  const round = (ring ? Math.min(s.probeSuccessors, s.others) : s.others) * s.probeIntervalMs
  if (!ring) for (let m = 0; m < s.others; m++) periodic('probe', m, round, ((m + phase.probe[m]!) / s.others) * round, fromMs, toMs, out)
  for (const [i, m] of s.probers.entries()) periodic('probe', m, round, ((i + 0.5) / s.probers.length) * round, fromMs, toMs, out)
  const mates = zoneMembers(s, 0)[1]
  const schedulers = zoneSchedulers(s)
  const leases: ScheduledEvent[] = []
  for (const [z, m] of schedulers.entries()) {
    if (m < mates) periodic('lease', m, s.leaseRenewMs, (z / schedulers.length) * s.leaseRenewMs, fromMs, toMs, leases)
    periodic('summary', m, s.summaryMaxIntervalMs, ((z + 0.5) / schedulers.length) * s.summaryMaxIntervalMs, fromMs, toMs, out)
  }
  // the agent's zone's scheduler (member 0, its first) relays its zone mates' health with its renewals
  const relay = mates > 0 && schedulers[0] === 0
  const scheduler = relay ? 0 : -1
  // the scheduler's own health, and every write when (never, as zones are laid out) nobody relays
  for (const w of healthWrites(s, fromMs, toMs, seed, phase.health)) if (w.member === scheduler || !relay) out.push({ ...w, kind: 'health' })
  if (relay && leases.length > 0) {
    // renewal k, at k × period (zone 0's phase is 0), carries the writes in (its previous renewal, it]
    const bySeq = new Map(leases.map(e => [e.seq, e]))
    for (const e of leases) e.health = []
    const first = leases[0]!
    const last = leases[leases.length - 1]!
    // (the schedule starts at its epoch: nothing is written before it)
    for (const w of healthWrites(s, Math.max(0, first.at - s.leaseRenewMs), last.at + 1, seed, phase.health)) {
      if (w.member === scheduler) continue
      bySeq.get(Math.ceil(w.at / s.leaseRenewMs))?.health!.push(w)
    }
  }
  out.push(...leases)
  // the exchanges others start (health changes are in healthWrites above)
  const drawn: ScheduledEvent[] = []
  poissonEvents(s, fromMs, toMs, seed, drawn)
  for (const e of drawn) if (e.kind !== 'health') out.push(e)
  return out.sort((a, b) => a.at - b.at)
}
