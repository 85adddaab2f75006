import type { DeploymentSpec } from './spec.ts'

/** How a model update is judged when the deployment does not say (`update` in its spec). */
export const UPDATE_DEFAULTS = { maxErrorPct: 5, minPredicts: 20, availableTimeoutSec: 300 } as const
/** The attempts a placement remembers. */
export const MAX_HISTORY = 10

export type UpdatePhase = 'canary' | 'rolling' | 'succeeded' | 'rolled-back' | 'superseded'

/** One version tried, as the deployment's status shows it. */
export interface UpdateAttempt {
  bundle: string
  version?: string
  outcome: 'in-progress' | 'succeeded' | 'rolled-back' | 'superseded'
  reason?: string
  startedAt: number
  endedAt?: number
}

/**
 * A model update as the scheduler keeps it in the deployment's placement
 * (signed registry state), so a scheduler that takes over resumes it where
 * the previous one left off.
 */
export interface ModelUpdate {
  /** the version the deployment ran before (what a rollback returns to) */
  from: string
  fromVersion?: string
  to: string
  toVersion?: string
  phase: UpdatePhase
  /** nodes switched to `to` so far, each with when (wall ms) */
  updated: Array<{ node: string, at: number }>
  /** how many nodes run `to` as canaries before the rest follow (0: no canary) */
  canary: number
  /** when every canary was AVAILABLE: the canary's watch runs from here */
  canaryAt?: number
  /** when the canary passed and the rest began to follow */
  canaryPassedAt?: number
  /** the deployment entry the update was for: a rolled-back version is tried again only when the deployment is written again */
  deploymentTs: [number, number]
  reason?: string
  history: UpdateAttempt[]
}

/** What one node's `instance/<node>/<name>` entry says about this deployment. */
export interface NodeReport {
  /** the bundle its instance runs (AVAILABLE), if one does */
  running?: string
  /** a bundle it failed to start, why, and when (its wall ms) */
  failed?: { bundle: string, reason: string, at: number }
  /** predicts answered by the running instance since it started */
  predicts?: { ok: number, errors: number }
}

export interface UpdateInput {
  /** the placement that counts now (of this scheduler or of the one before it) */
  previous: { bundle: string, update?: ModelUpdate } | undefined
  /** the bundle the deployment's model reference resolves to */
  target: string
  version: (bundle: string) => string | undefined
  deploymentTs: [number, number]
  /** the nodes the deployment is placed on now, in placement order */
  nodes: string[]
  /** whether instances should run now (window, schedule) */
  active: boolean
  spec: Pick<DeploymentSpec, 'canary' | 'update'>
  report: (node: string) => NodeReport
  now: number
}

export interface UpdateDecision {
  /** what nodes not switched to the update's `to` run */
  bundle: string
  update?: ModelUpdate
  /** what happened in this step, for the log */
  event?: string
}

const IN_PROGRESS = new Set<UpdatePhase>(['canary', 'rolling'])

export const updating = (u: ModelUpdate | undefined): boolean => u != null && IN_PROGRESS.has(u.phase)

/** The bundle `node` runs under a placement: the update's new one once switched, else the placement's. */
export function bundleFor (placement: { bundle: string, update?: ModelUpdate }, node: string): string {
  const u = placement.update
  return u != null && updating(u) && u.updated.some(x => x.node === node) ? u.to : placement.bundle
}

/** How many nodes of `n` are canaries. */
export function canaryCount (canary: DeploymentSpec['canary'], n: number): number {
  if (canary == null || n === 0) return 0
  const k = canary.replicas ?? Math.ceil(n * (canary.percent ?? 0) / 100)
  return Math.max(1, Math.min(n, k))
}

const sameTs = (a: [number, number] | undefined, b: [number, number]): boolean => a?.[0] === b[0] && a?.[1] === b[1]

/**
 * One step of a deployment's model update, decided from the placement that
 * counts and what the nodes report: a pure function, so any scheduler —
 * this one, or the next after a failover — decides the same from the same
 * registry. Nodes switch one at a time (canaries first, then the rest); a
 * node switches by starting the new version beside the old one and retiring
 * the old only once the new is AVAILABLE (the reconciler's hot swap), so an
 * update adds at most one instance at a time. The update rolls back when a
 * new instance fails to start, is not AVAILABLE within
 * `availableTimeoutSec` of its step, or the new version's predict error
 * rate passes `maxErrorPct` over at least `minPredicts` predicts.
 */
export function stepUpdate (input: UpdateInput): UpdateDecision {
  const { previous, target, now } = input
  if (previous == null) return { bundle: target }
  const stable = previous.bundle
  let u = previous.update == null ? undefined : structuredClone(previous.update)
  let event: string | undefined
  if (u != null && updating(u) && u.to !== target) {
    // the deployment now asks for another version: this attempt ends, its nodes go back to the stable one first
    u = end(u, 'superseded', `the deployment now asks for ${input.version(target) ?? target}`, now)
    event = 'model update superseded'
  }
  if (!updating(u)) {
    if (target === stable) return settled(stable, u, event)
    if (u?.phase === 'rolled-back' && u.to === target && sameTs(u.deploymentTs, input.deploymentTs)) return settled(stable, u, event)
    const attempt: UpdateAttempt = { bundle: target, ...opt('version', input.version(target)), outcome: 'in-progress', startedAt: now }
    const history = [...(u?.history ?? []), attempt].slice(-MAX_HISTORY)
    const fresh: ModelUpdate = {
      from: stable,
      ...opt('fromVersion', input.version(stable)),
      to: target,
      ...opt('toVersion', input.version(target)),
      phase: 'rolling',
      updated: [],
      canary: canaryCount(input.spec.canary, input.nodes.length),
      deploymentTs: input.deploymentTs,
      history
    }
    if (!input.active || input.nodes.length === 0) {
      // nothing runs to update: the next instances start in the new version
      return { bundle: target, update: end(fresh, 'succeeded', 'applied at once: no instance was running', now), event: 'model update applied' }
    }
    u = { ...fresh, phase: fresh.canary > 0 ? 'canary' : 'rolling' }
    event = 'model update started'
  }
  return advance(u!, input, event)
}

function advance (u: ModelUpdate, input: UpdateInput, event: string | undefined): UpdateDecision {
  const { nodes, now } = input
  const limits = { ...UPDATE_DEFAULTS, ...input.spec.update }
  // a node no longer placed is no longer part of the update
  u.updated = u.updated.filter(x => nodes.includes(x.node))
  const reports = new Map(u.updated.map(x => [x.node, input.report(x.node)]))
  for (const { node, at } of u.updated) {
    const failed = reports.get(node)?.failed
    if (failed?.bundle === u.to && failed.at >= at) return rollback(u, `the new instance on ${node} failed: ${failed.reason}`, now)
  }
  const pending = u.updated.filter(x => reports.get(x.node)?.running !== u.to)
  for (const { node, at } of pending) {
    if (now - at > limits.availableTimeoutSec * 1000) return rollback(u, `the new instance on ${node} was not AVAILABLE within ${limits.availableTimeoutSec} s`, now)
  }
  let ok = 0
  let errors = 0
  for (const r of reports.values()) {
    if (r.running !== u.to || r.predicts == null) continue
    ok += r.predicts.ok
    errors += r.predicts.errors
  }
  const rate = ok + errors === 0 ? 0 : 100 * errors / (ok + errors)
  if (ok + errors >= limits.minPredicts && rate > limits.maxErrorPct) {
    return rollback(u, `predict error rate ${rate.toFixed(1)}% over ${ok + errors} predicts passed maxErrorPct ${limits.maxErrorPct}%`, now)
  }
  if (pending.length > 0) return { bundle: u.from, update: u, ...opt('event', event) }
  if (u.phase === 'canary') {
    if (u.updated.length < Math.min(u.canary, nodes.length)) return switchNext(u, nodes, now, event ?? 'canary step')
    if (u.canaryAt == null) return { bundle: u.from, update: { ...u, canaryAt: now }, event: 'canary AVAILABLE: watching it' }
    if (now - u.canaryAt < (input.spec.canary?.durationSec ?? 0) * 1000) return { bundle: u.from, update: u, ...opt('event', event) }
    u = { ...u, phase: 'rolling', canaryPassedAt: now }
    event = 'canary passed'
  }
  if (nodes.some(n => !u.updated.some(x => x.node === n))) return switchNext(u, nodes, now, event ?? 'update step')
  return { bundle: u.to, update: end(u, 'succeeded', undefined, now), event: 'model update succeeded' }
}

function switchNext (u: ModelUpdate, nodes: string[], now: number, event: string): UpdateDecision {
  const next = nodes.find(n => !u.updated.some(x => x.node === n))!
  return { bundle: u.from, update: { ...u, updated: [...u.updated, { node: next, at: now }] }, event }
}

function rollback (u: ModelUpdate, reason: string, now: number): UpdateDecision {
  return { bundle: u.from, update: end(u, 'rolled-back', reason, now), event: 'model update rolled back' }
}

/** End the update's current attempt: the stable bundle stays (or, on success, becomes `to`). */
function end (u: ModelUpdate, outcome: 'succeeded' | 'rolled-back' | 'superseded', reason: string | undefined, now: number): ModelUpdate {
  const history = u.history.map((h, i) => i === u.history.length - 1 && h.outcome === 'in-progress'
    ? { ...h, outcome, endedAt: now, ...opt('reason', reason) }
    : h)
  const { reason: _old, ...rest } = u
  return { ...rest, phase: outcome, updated: [], history, ...opt('reason', reason) }
}

function settled (bundle: string, u: ModelUpdate | undefined, event: string | undefined): UpdateDecision {
  return { bundle, ...opt('update', u), ...opt('event', event) }
}

function opt<K extends string, V> (key: K, value: V | undefined): { [k in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [k in K]?: V }
}

/** A placement's update as read from the registry, checked before anything trusts its shape. */
export function parseModelUpdate (value: unknown): ModelUpdate | undefined {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const v = value as Partial<ModelUpdate>
  if (typeof v.from !== 'string' || typeof v.to !== 'string' || typeof v.phase !== 'string' || !['canary', 'rolling', 'succeeded', 'rolled-back', 'superseded'].includes(v.phase)) return undefined
  if (!Array.isArray(v.updated) || v.updated.length > 1000 || !v.updated.every(x => typeof x?.node === 'string' && Number.isFinite(x.at))) return undefined
  if (!Number.isSafeInteger(v.canary) || !Array.isArray(v.history) || v.history.length > MAX_HISTORY) return undefined
  if (!v.history.every(h => typeof h?.bundle === 'string' && typeof h.outcome === 'string' && Number.isFinite(h.startedAt))) return undefined
  if (!Array.isArray(v.deploymentTs) || v.deploymentTs.length !== 2) return undefined
  return v as ModelUpdate
}
