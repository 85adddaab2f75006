import type { DeploymentSpec } from './spec.ts'

export type AutoscaleSpec = NonNullable<DeploymentSpec['autoscale']>

/** What the autoscaler remembers about one deployment. */
export interface AutoscaleState {
  replicas: number
  /** wall-clock ms of the last change */
  changedAt: number
  /** since when the average has been above the high / below the low mark */
  highSince?: number
  lowSince?: number
}

/**
 * One autoscaling step. A change needs the replicas' average CPU past a
 * threshold for `sustainSec` and `cooldownSec` since the previous change;
 * the gap between the two thresholds is the hysteresis that keeps it from
 * flapping. Returns the next state (replicas unchanged when nothing is due).
 */
export function autoscaleStep (spec: AutoscaleSpec, state: AutoscaleState, avgCpuPct: number | undefined, now: number): AutoscaleState {
  const min = spec.minReplicas
  const max = spec.maxReplicas
  const clamped = Math.min(max, Math.max(min, state.replicas))
  const next: AutoscaleState = { ...state, replicas: clamped }
  if (avgCpuPct == null) return { ...next, highSince: undefined, lowSince: undefined }
  next.highSince = avgCpuPct > spec.cpuHighPct ? (state.highSince ?? now) : undefined
  next.lowSince = avgCpuPct < spec.cpuLowPct ? (state.lowSince ?? now) : undefined
  const sustained = (since: number | undefined): boolean => since != null && now - since >= spec.sustainSec * 1000
  const cooled = now - state.changedAt >= spec.cooldownSec * 1000
  if (cooled && sustained(next.highSince) && clamped < max) {
    return { replicas: clamped + 1, changedAt: now }
  }
  if (cooled && sustained(next.lowSince) && clamped > min) {
    return { replicas: clamped - 1, changedAt: now }
  }
  return next
}
