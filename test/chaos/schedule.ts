/**
 * The nemesis's plan: every fault of a run, drawn up front from the seed
 * alone, so `npm run chaos -- --seed S` with the same minutes and mesh size
 * applies the same faults at the same offsets to the same nodes.
 */

import { prng } from '../../sensors/simulated.ts'

export const FAULT_KINDS = [
  /** kill -9 the agent, restart it at the end */
  'kill',
  /** SIGSTOP, SIGCONT at the end */
  'pause',
  /** `targets` move to the switch's second bridge: a 2/5 split (the coordinator and receivers stay with the five) */
  'split',
  /** blackhole routes: `targets[0]` and `targets[1..]` cannot reach each other; `bridge` reaches both sides */
  'bridge',
  /**
   * the target's outgoing packets are all lost: it hears, nobody hears it. (Its
   * neighbour entries point at a MAC nobody has: `tc netem` needs the sch_netem
   * kernel module, which machines like this one lack.)
   */
  'oneway',
  /** the target's wall clock runs 5 minutes ahead (libfaketime) */
  'skew',
  /** the target's data dir (a small tmpfs) is filled */
  'disk',
  /** the webhook receiver closes its port */
  'receiver',
  /** the MQTT broker stops */
  'broker',
  /** a bundle with one byte changed is offered to an agent, and an unsigned deployment write */
  'tamper'
] as const
export type FaultKind = typeof FAULT_KINDS[number]

export interface Fault {
  kind: FaultKind
  /** offsets from the start of the nemesis, ms */
  at: number
  until: number
  /** agent indexes (0-based) */
  targets: number[]
  /** for `bridge`: the agent that sees both sides */
  bridge?: number
}

export interface PlanInit {
  seed: number
  durationMs: number
  agents: number
}

/** Which faults may overlap: never two network faults, at most two agents down, one skew, one full disk. */
function allowed (kind: FaultKind, active: Fault[], agents: number): boolean {
  const down = new Set(active.filter(f => f.kind === 'kill' || f.kind === 'pause').flatMap(f => f.targets))
  switch (kind) {
    case 'kill':
    case 'pause':
      return down.size < 2 && down.size < agents - 3
    case 'split':
    case 'bridge':
    case 'oneway':
      return !active.some(f => f.kind === 'split' || f.kind === 'bridge' || f.kind === 'oneway')
    default:
      return !active.some(f => f.kind === kind)
  }
}

function pick<T> (rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)]!
}

function distinct (rand: () => number, n: number, count: number, exclude: Set<number> = new Set()): number[] {
  const pool = Array.from({ length: n }, (_, i) => i).filter(i => !exclude.has(i))
  const out: number[] = []
  while (out.length < count && pool.length > 0) out.push(pool.splice(Math.floor(rand() * pool.length), 1)[0]!)
  return out
}

/** The faults of one run: one starts every 3–10 s, each lasts 4–20 s (tamper attempts are instant), all end before `durationMs`. */
export function plan (init: PlanInit): Fault[] {
  const rand = prng(init.seed)
  const faults: Fault[] = []
  let t = 3000 + Math.floor(rand() * 5000)
  while (t < init.durationMs - 4000) {
    const active = faults.filter(f => f.at <= t && f.until > t)
    const kinds = FAULT_KINDS.filter(k => allowed(k, active, init.agents))
    const kind = pick(rand, kinds)
    const length = kind === 'tamper' ? 0 : 4000 + Math.floor(rand() * 16_000)
    const until = Math.min(t + length, init.durationMs)
    const down = new Set(active.filter(f => f.kind === 'kill' || f.kind === 'pause').flatMap(f => f.targets))
    let targets: number[] = []
    let bridge: number | undefined
    if (kind === 'kill' || kind === 'pause') targets = distinct(rand, init.agents, 1, down)
    else if (kind === 'split') targets = distinct(rand, init.agents, 2)
    else if (kind === 'bridge') {
      // side A: targets[0..2], side B: the rest but the bridge
      const order = distinct(rand, init.agents, init.agents)
      bridge = order[0]!
      targets = order.slice(1)
    } else if (kind === 'oneway' || kind === 'skew' || kind === 'disk' || kind === 'tamper') targets = distinct(rand, init.agents, 1)
    faults.push({ kind, at: t, until, targets, ...(bridge == null ? {} : { bridge }) })
    t += 3000 + Math.floor(rand() * 7000)
  }
  return faults
}
