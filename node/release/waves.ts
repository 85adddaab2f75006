import { createHash } from 'node:crypto'
import type { ReleaseRecord } from './record.ts'
import type { RolloutSpec, RolloutState } from './rollout.ts'

/** A node as the rollout logic sees it: its certificate's role and labels, its release record and its liveness here. */
export interface FleetNode {
  peer: string
  role: string
  labels: Record<string, string>
  record?: ReleaseRecord
  /** as this node's membership judges it */
  liveness: 'alive' | 'suspect' | 'dead' | 'unknown'
  /** how long its liveness here has been what it is (unknown: since this node started looking); absent means just now */
  livenessForMs?: number
}

/**
 * Where a target stands in one rollout:
 *  - done: runs the rollout's version (and passed its health check, if it moved to it here)
 *  - failed: rolled back, or could not install; counts against maxFailures
 *  - skipped: will not take it (a downgrade not allowed); neither blocks nor counts
 *  - updating: pulling, installing, restarting or on probation
 *  - waiting: not started: its wave has not come, or the rollout is paused or halted
 *  - offline: not started, and not alive here: it catches up when it returns
 *  - superseded: a newer rollout names it
 */
export type Outcome = 'done' | 'failed' | 'skipped' | 'updating' | 'waiting' | 'offline' | 'superseded'

export interface TargetStatus {
  peer: string
  wave: number
  arch: string
  outcome: Outcome
  /** the release it runs */
  version: string
  state?: string
  detail?: string
  at?: number
}

export interface WaveStatus {
  index: number
  percent: number
  /** how many targets it holds, and how far they are */
  size: number
  done: number
  failed: number
  started: boolean
}

export type RolloutPhase = RolloutState | 'halted' | 'done'

export interface RolloutStatus {
  id: string
  spec: RolloutSpec
  version: string
  phase: RolloutPhase
  /** the latest wave whose nodes may update now */
  currentWave: number
  failures: number
  waves: WaveStatus[]
  targets: TargetStatus[]
  /** nodes the rollout names but that cannot take a release, and why */
  excluded: Array<{ peer: string, reason: string }>
  /** matching nodes of no architecture the rollout has a release for */
  unmatchedArch: number
}

/** A node that started updating and then went silent past this is counted failed: its loader will tell when it returns. */
export const LOST_GRACE_MS = 120_000

/**
 * How long this node's view of another node must hold before a rollout
 * acts on what is missing from it. Every node computes the waves from its
 * own copy of the registry, and a copy can lack a node's latest records for
 * a while: written as the node started, before it had peers to gossip to,
 * or gossiped while the two did not hear each other. Within this time
 * anti-entropy (a random peer every 15 s) brings them, or the node is back.
 *  - A node with no release record here is a target of the rollout (it
 *    holds its place in the order and its wave) until its liveness has
 *    held this long; only then is it excluded as one that reports none.
 *    Dropped at once, it shifted the waves: a second-wave node whose copy
 *    lacked the first-wave node's record counted itself first.
 *  - An offline target that never started lets the next wave go only once
 *    it has been down this long: a node restarting into the release is
 *    down for a few seconds, and the records saying it started may not be
 *    here yet.
 */
export const SETTLE_MS = 60_000

/** A node's place in a rollout's order: the same on every node, from the rollout id and peer id alone. */
export function rank (rolloutId: string, peer: string): string {
  return createHash('sha256').update(`${rolloutId}\n${peer}`).digest('hex')
}

/**
 * How many of `n` targets the waves reach, cumulatively: each wave's share
 * rounded up, at least one more node than the wave before while any are
 * left (a wave of nobody proves nothing), the last wave all of them.
 */
export function waveBounds (waves: readonly number[], n: number): number[] {
  const bounds: number[] = []
  let previous = 0
  waves.forEach((pct, i) => {
    let c = i === waves.length - 1 ? n : Math.ceil((pct / 100) * n - 1e-9)
    c = Math.min(n, Math.max(c, previous + 1))
    bounds.push(c)
    previous = c
  })
  return bounds
}

/** The release a node would get from a rollout (by its CPU), if any. */
export function releaseFor (spec: RolloutSpec, arch: string | undefined): RolloutSpec['releases'][number] | undefined {
  return spec.releases.find(r => r.arch === arch)
}

function labelsMatch (want: Record<string, string> | undefined, have: Record<string, string>): boolean {
  return Object.entries(want ?? {}).every(([k, v]) => have[k] === v)
}

/** Outcomes a target does not move from in this rollout: the waves after it may go, and the rollout can be done. */
const FINISHED: ReadonlySet<Outcome> = new Set(['done', 'failed', 'skipped', 'superseded'])

/** Whether this node's view of `node`'s liveness has held for `SETTLE_MS`. */
const settled = (node: FleetNode): boolean => (node.livenessForMs ?? 0) >= SETTLE_MS

/** Why a node the rollout's labels select cannot take it; undefined when it can, or may yet (a record not here yet). */
function exclusion (node: FleetNode): string | undefined {
  if (node.role === 'coordinator') return 'a coordinator: it is updated with its host, not by rollouts'
  if (node.record == null) return settled(node) ? 'reports no release: an agent from before releases (flash a new image once)' : undefined
  if (!node.record.managed) return node.record.reason ?? 'not started by an image\'s loader: no way back from a bad release'
  return undefined
}

function outcomeOf (spec: RolloutSpec, version: string, node: FleetNode, now: number): Outcome {
  const r = node.record
  const away = node.liveness === 'dead' || node.liveness === 'unknown'
  if (r == null) return away ? 'offline' : 'waiting'
  const ours = r.rollout === spec.id
  if (ours && (r.state === 'rolled-back' || r.state === 'failed')) return 'failed'
  if (ours && r.state === 'skipped') return 'skipped'
  if (r.version === version && r.state !== 'verifying' && !(ours && r.state === 'restarting')) return 'done'
  if (ours && ['downloading', 'installing', 'restarting', 'verifying'].includes(r.state)) {
    // gone quiet mid-update for longer than it was given: count it failed
    if (node.liveness === 'dead' && now - r.at > spec.healthDeadlineSec * 1000 + LOST_GRACE_MS) return 'failed'
    return 'updating'
  }
  return away ? 'offline' : 'waiting'
}

/**
 * Work out a rollout from the registry as one node sees it: its targets
 * (nodes whose certificate labels match, that can take releases and have
 * a release for their CPU, and nodes whose release record is not here yet,
 * until `SETTLE_MS`), each target's wave (targets ordered by
 * `rank`, waves cut by `waveBounds`), how far each target got, the failures
 * and which waves may run. Every node computes this for itself; there is
 * no controller.
 *
 * A wave may start when every target of the waves before it has finished
 * (done, failed or skipped) or never started and has been offline for
 * `SETTLE_MS`, and the last of them became healthy `waveWaitSec`
 * ago. The rollout halts once more than `maxFailures` targets failed.
 */
export function rolloutStatus (spec: RolloutSpec, nodes: FleetNode[], now: number, newer: RolloutSpec[] = []): RolloutStatus {
  const version = spec.releases[0]!.version
  const excluded: RolloutStatus['excluded'] = []
  let unmatchedArch = 0
  const candidates: FleetNode[] = []
  for (const node of nodes) {
    if (!labelsMatch(spec.labels, node.labels)) continue
    const why = exclusion(node)
    if (why != null) {
      excluded.push({ peer: node.peer, reason: why })
      continue
    }
    if (node.record != null && releaseFor(spec, node.record.arch) == null) {
      unmatchedArch++
      excluded.push({ peer: node.peer, reason: `no release for ${node.record.arch} in this rollout` })
      continue
    }
    candidates.push(node)
  }
  candidates.sort((a, b) => { const x = rank(spec.id, a.peer); const y = rank(spec.id, b.peer); return x < y ? -1 : x > y ? 1 : 0 })
  const bounds = waveBounds(spec.waves, candidates.length)
  const waveOf = (i: number): number => { const w = bounds.findIndex(b => i < b); return w < 0 ? bounds.length - 1 : w }
  const supersededBy = (node: FleetNode): boolean => newer.some(n => n.state !== 'aborted' && labelsMatch(n.labels, node.labels) && releaseFor(n, node.record?.arch) != null)
  const targets: TargetStatus[] = candidates.map((node, i) => {
    const r = node.record
    if (r == null) return { peer: node.peer, wave: waveOf(i), arch: 'unknown', outcome: outcomeOf(spec, version, node, now), version: 'unknown', detail: 'its release record has not reached this node yet' }
    const outcome = supersededBy(node) && !(r.rollout === spec.id && ['rolled-back', 'failed', 'skipped'].includes(r.state)) && r.version !== version ? 'superseded' : outcomeOf(spec, version, node, now)
    return {
      peer: node.peer,
      wave: waveOf(i),
      arch: r.arch,
      outcome,
      version: r.version,
      ...(r.rollout === spec.id ? { state: r.state, at: r.at, ...(r.detail == null ? {} : { detail: r.detail }) } : {})
    }
  })
  const failures = targets.filter(t => t.outcome === 'failed').length
  const halted = failures > spec.maxFailures
  const healthyAt = new Map(candidates.map(n => [n.peer, n.record?.rollout === spec.id ? n.record.healthyAt : undefined]))
  const through = (t: TargetStatus, i: number): boolean => FINISHED.has(t.outcome) || (t.outcome === 'offline' && settled(candidates[i]!))

  // the first wave runs at once; each next one when the ones before are through, and waveWaitSec has passed
  let currentWave = 0
  for (let w = 1; w < spec.waves.length; w++) {
    if (!targets.every((t, i) => t.wave >= w || through(t, i))) break
    const last = Math.max(0, ...targets.filter(t => t.wave === w - 1 && t.outcome === 'done').map(t => healthyAt.get(t.peer) ?? 0))
    if (last > 0 && now < last + spec.waveWaitSec * 1000) break
    currentWave = w
  }
  const waves: WaveStatus[] = spec.waves.map((percent, index) => {
    const inWave = targets.filter(t => t.wave === index)
    return {
      index,
      percent,
      size: inWave.length,
      done: inWave.filter(t => t.outcome === 'done').length,
      failed: inWave.filter(t => t.outcome === 'failed').length,
      started: index <= currentWave && spec.state !== 'aborted'
    }
  })
  const finished = targets.every(t => FINISHED.has(t.outcome))
  const phase: RolloutPhase = spec.state === 'aborted' ? 'aborted' : halted ? 'halted' : spec.state === 'paused' ? 'paused' : finished ? 'done' : 'active'
  return { id: spec.id, spec, version, phase, currentWave, failures, waves, targets, excluded, unmatchedArch }
}

/**
 * Of all rollouts, the one a node follows: the newest (by createdAt, then
 * id) that is not aborted and names it (labels, and a release for its CPU).
 */
export function rolloutFor (rollouts: RolloutSpec[], node: Pick<FleetNode, 'labels'> & { arch: string }): RolloutSpec | undefined {
  return newestFirst(rollouts).find(r => r.state !== 'aborted' && labelsMatch(r.labels, node.labels) && releaseFor(r, node.arch) != null)
}

/** Newest first, by createdAt then id, so every node orders them alike. */
export function newestFirst (rollouts: RolloutSpec[]): RolloutSpec[] {
  return [...rollouts].sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
}
