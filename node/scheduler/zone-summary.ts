import { Type, type Static } from '@sinclair/typebox'
import { compile } from '../../protocols/schema.ts'
import { ZONE_SUMMARY_PREFIX, zoneOf, zoneSummaryKey } from '../../protocols/registry/zones.ts'
import { MAX_TERM } from './lease.ts'
import { firstInPrecedence } from './precedence.ts'
import { endorsedFromOutside } from './endorse.ts'
import type { Election } from './election.ts'
import type { Leader } from './leader.ts'
import type { Member } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { Startable } from '@libp2p/interface'
import type { Logger } from 'pino'

const Count = Type.Integer({ minimum: 0, maximum: 1_000_000 })
const Pct = Type.Union([Type.Number({ minimum: 0, maximum: 100 }), Type.Null()])

/**
 * What `zone/<zone>/<scheduler>` holds: how a zone looks from outside, so
 * nodes and coordinators of other zones, which keep none of its `health/`
 * and `instance/` entries, still see it. Counts only: a summary costs the
 * same whatever the zone's size.
 */
export const ZoneSummarySchema = Type.Object({
  zone: Type.String({ minLength: 1, maxLength: 63 }),
  /** the zone's scheduler (the writer) and its term */
  scheduler: Type.String({ minLength: 1, maxLength: 128 }),
  term: Type.Integer({ minimum: 0 }),
  /** writer's wall clock, ms */
  at: Type.Integer({ minimum: 0 }),
  /** the zone's members by state, as its scheduler sees them (coordinators left out) */
  members: Type.Object({ alive: Count, suspect: Count, dead: Count }, { additionalProperties: false }),
  /** model instances on the zone's members, by state (`running`, `starting`, `failed`, …) */
  instances: Type.Record(Type.String({ maxLength: 32, pattern: '^[a-z-]+$' }), Count, { maxProperties: 16 }),
  /** live members whose health the average covers */
  reporting: Count,
  /** average machine CPU and used memory of those members, % */
  cpuPct: Pct,
  memoryPct: Pct
}, { additionalProperties: false })

export type ZoneSummary = Static<typeof ZoneSummarySchema>

const validate = compile(ZoneSummarySchema)

/** A summary value from the registry, checked before anything reads it. */
export function parseZoneSummary (value: unknown): ZoneSummary | undefined {
  return validate(value) ? value : undefined
}

const round1 = (n: number): number => Math.round(n * 10) / 10

/** Summarise `zone` from what its scheduler holds: its members (with their health) and the zone's instance entries. */
export function summarize (zone: string, members: readonly Member[], registry: Pick<Registry, 'list'>, leader: Leader, now: number): ZoneSummary {
  const inZone = members.filter(m => zoneOf(m.labels) === zone && m.role !== 'coordinator')
  const peers = new Set(inZone.map(m => m.peerId))
  const counts = { alive: 0, suspect: 0, dead: 0 }
  let cpu = 0
  let memory = 0
  let reporting = 0
  for (const m of inZone) {
    counts[m.state]++
    const h = m.health
    if (m.state === 'dead' || h == null || !(h.memTotalBytes > 0)) continue
    reporting++
    cpu += h.cpuPct
    memory += 100 * (h.memTotalBytes - h.memFreeBytes) / h.memTotalBytes
  }
  const instances: Record<string, number> = {}
  for (const e of registry.list<{ state?: unknown }>('instance/')) {
    const peer = e.key.split('/')[1]
    const state = e.value?.state
    if (peer == null || !peers.has(peer) || typeof state !== 'string' || !/^[a-z-]{1,32}$/.test(state)) continue
    if (instances[state] == null && Object.keys(instances).length >= 16) continue
    instances[state] = (instances[state] ?? 0) + 1
  }
  return {
    zone,
    scheduler: leader.peerId,
    term: leader.term,
    at: now,
    members: counts,
    instances,
    reporting,
    cpuPct: reporting === 0 ? null : Math.min(100, round1(cpu / reporting)),
    memoryPct: reporting === 0 ? null : Math.min(100, round1(memory / reporting))
  }
}

export interface Meaningful {
  cpuChangePct: number
  memoryChangePct: number
}

/** Whether `next` says something `prev` did not: another scheduler or term, other counts, or averages that moved. */
export function changedMeaningfully (prev: ZoneSummary | undefined, next: ZoneSummary, m: Meaningful): boolean {
  if (prev == null || prev.scheduler !== next.scheduler || prev.term !== next.term || prev.reporting !== next.reporting) return true
  if (JSON.stringify(prev.members) !== JSON.stringify(next.members)) return true
  const states = new Set([...Object.keys(prev.instances), ...Object.keys(next.instances)])
  for (const s of states) if (prev.instances[s] !== next.instances[s]) return true
  const moved = (a: number | null, b: number | null, by: number): boolean => (a == null) !== (b == null) || (a != null && b != null && Math.abs(a - b) >= by)
  return moved(prev.cpuPct, next.cpuPct, m.cpuChangePct) || moved(prev.memoryPct, next.memoryPct, m.memoryChangePct)
}

export interface SeenSummary extends ZoneSummary {
  /** ms since its writer wrote it, on the writer's clock */
  ageMs: number
  /** whether its writer is the scheduler this node follows in that zone */
  current: boolean
}

/**
 * Each zone's summary as this node sees it: the one written by the zone's
 * scheduler as this node follows it, else the newest (a new scheduler has
 * not written its own yet). Written only by nodes of that zone (checked when
 * an entry comes in, from its writer's certificate).
 */
export function zoneSummaries (registry: Pick<Registry, 'list'>, authority: { leaderOf(zone: string): Leader | undefined }, now = Date.now()): SeenSummary[] {
  const byZone = new Map<string, Array<{ writer: string, ts: number, summary: ZoneSummary }>>()
  for (const e of registry.list(ZONE_SUMMARY_PREFIX)) {
    const [, zone, writer] = e.key.split('/')
    const summary = parseZoneSummary(e.value)
    if (zone == null || writer == null || summary == null || summary.zone !== zone) continue
    byZone.set(zone, [...(byZone.get(zone) ?? []), { writer, ts: e.ts[0], summary }])
  }
  const out: SeenSummary[] = []
  for (const [zone, list] of byZone) {
    const leader = authority.leaderOf(zone)?.peerId
    const chosen = list.find(s => s.writer === leader) ?? list.sort((a, b) => b.ts - a.ts)[0]!
    out.push({ ...chosen.summary, ageMs: Math.max(0, now - chosen.summary.at), current: chosen.writer === leader })
  }
  return out.sort((a, b) => a.zone.localeCompare(b.zone))
}

/**
 * The scheduler of a zone whose leases this node does not keep, as the
 * zone's summaries name it: each is written by the scheduler it names, an
 * `eligible` member of that zone by its certificate, and of several (a
 * hand-over, a healed partition) the precedence rule picks one, among
 * those established by the zone's fleet-wide endorsements (`live`: the
 * zone's live eligible members). A summary
 * stays until its writer withdraws it or a successor's outranks it, so a
 * scheduler that died keeps naming the zone's placements until the next
 * one writes.
 */
export function summarisedLeader (registry: Pick<Registry, 'list'>, zone: string, eligible: ReadonlySet<string>, live: ReadonlySet<string>): Leader | undefined {
  const named: Leader[] = []
  for (const e of registry.list(`${ZONE_SUMMARY_PREFIX}${zone}/`)) {
    const writer = e.key.split('/')[2]
    const summary = parseZoneSummary(e.value)
    if (writer == null || summary?.zone !== zone || summary.scheduler !== writer || !eligible.has(writer)) continue
    if (summary.term < 1 || summary.term > MAX_TERM) continue
    // a member naming itself is believed only when most of its zone follows it
    if (endorsedFromOutside(registry, zone, { peerId: writer, term: summary.term }, live)) named.push({ peerId: writer, term: summary.term })
  }
  return firstInPrecedence(named)
}

export interface ZoneSummaryInit extends Partial<Meaningful> {
  /** Summarise the zone this often while this node is its scheduler. @default 5000 */
  sampleIntervalMs?: number
  /** Write the summary at least this often, changed or not. @default 30000 */
  maxIntervalMs?: number
}

export interface ZoneSummaryComponents {
  peerId: string
  registry: Pick<Registry, 'list' | 'set' | 'delete' | 'get'>
  members(): readonly Member[]
  election: Pick<Election, 'zone' | 'isLeader' | 'leader' | 'addEventListener' | 'removeEventListener'>
  logger: Logger
  /** @default Date.now */
  now?: () => number
}

/**
 * The zone's summary, kept by its scheduler: sampled every
 * `sampleIntervalMs`, written to `zone/<zone>/<self>` on the fleet channel
 * when it changed meaningfully or `maxIntervalMs` passed. A node that stops
 * being the scheduler deletes its summary, so readers fall back to the
 * newest one until its successor writes.
 */
export class ZoneSummaryWriter implements Startable {
  readonly #c: ZoneSummaryComponents
  readonly #sampleMs: number
  readonly #maxMs: number
  readonly #meaningful: Meaningful
  readonly #now: () => number
  #timer?: NodeJS.Timeout
  #last?: ZoneSummary
  #writing = false

  constructor (components: ZoneSummaryComponents, init: ZoneSummaryInit = {}) {
    this.#c = components
    this.#sampleMs = init.sampleIntervalMs ?? 5000
    this.#maxMs = init.maxIntervalMs ?? 30_000
    this.#meaningful = { cpuChangePct: init.cpuChangePct ?? 10, memoryChangePct: init.memoryChangePct ?? 5 }
    this.#now = components.now ?? Date.now
  }

  async start (): Promise<void> {
    this.#timer = setInterval(() => { void this.tick() }, this.#sampleMs)
    this.#timer.unref()
    this.#c.election.addEventListener('leader:change', this.#onLeader)
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    this.#c.election.removeEventListener('leader:change', this.#onLeader)
  }

  readonly #onLeader = (): void => { void this.tick() }

  get key (): string {
    return zoneSummaryKey(this.#c.election.zone, this.#c.peerId)
  }

  /** Summarise and write when due; withdraw our summary when we no longer schedule the zone. */
  async tick (): Promise<void> {
    if (this.#writing) return
    this.#writing = true
    try {
      const key = this.key
      const leader = this.#c.election.isLeader() ? this.#c.election.leader() : undefined
      if (leader == null) {
        this.#last = undefined
        const mine = this.#c.registry.get(key)
        if (mine != null && !mine.deleted) await this.#c.registry.delete(key)
        return
      }
      const now = this.#now()
      const next = summarize(this.#c.election.zone, this.#c.members(), this.#c.registry, leader, now)
      if (!changedMeaningfully(this.#last, next, this.#meaningful) && now - (this.#last?.at ?? 0) < this.#maxMs) return
      await this.#c.registry.set(key, next)
      this.#last = next
    } catch (err: any) {
      this.#c.logger.debug({ err: err.message }, 'writing the zone summary failed')
    } finally {
      this.#writing = false
    }
  }
}
