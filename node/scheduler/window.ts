import { Cron } from 'croner'
import type { DeploymentSpec } from './spec.ts'

/**
 * When a deployment may run. A fixed window `{start, end}` is half-open
 * [start, end); a recurring schedule runs `durationSec` from each cron
 * occurrence. Every agent evaluates this on its own clock, so instances
 * start and stop on time even when no scheduler is reachable.
 */
export interface ActivePeriod {
  active: boolean
  /** when `active` next changes, ms since epoch; null when never */
  nextChange: number | null
}

export function activePeriod (spec: Pick<DeploymentSpec, 'window' | 'schedule'>, now = Date.now()): ActivePeriod {
  if (spec.window != null) {
    const start = Date.parse(spec.window.start)
    const end = Date.parse(spec.window.end)
    if (now < start) return { active: false, nextChange: start }
    if (now < end) return { active: true, nextChange: end }
    return { active: false, nextChange: null }
  }
  if (spec.schedule != null) {
    const cron = new Cron(spec.schedule.cron, spec.schedule.timezone == null ? {} : { timezone: spec.schedule.timezone })
    const durationMs = spec.schedule.durationSec * 1000
    // the latest occurrence at or before now (croner's previous runs exclude `now` itself)
    const previous = cron.previousRuns(1, new Date(now + 1))[0]?.getTime()
    if (previous != null && now < previous + durationMs) {
      return { active: true, nextChange: previous + durationMs }
    }
    const next = cron.nextRun(new Date(now))?.getTime() ?? null
    return { active: false, nextChange: next }
  }
  return { active: true, nextChange: null }
}
