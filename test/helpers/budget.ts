/**
 * Waits that scale with how slow the machine is right now. The first agent
 * (or coordinator) a test process starts is timed; every later deadline is
 * stretched by how much slower that start was than on an idle machine. On
 * a 2-core machine shared with other work a start can take ten times as
 * long as on an idle one, and so does everything after it.
 */

/** An agent's start from the app bundle on an idle 2-core machine (spawn to runtime file), measured. */
export const NOMINAL_START_MS = 1500
/** Stretch no further: past this the machine is too busy for any budget to mean much, and tap's own timeout must still hold. */
export const MAX_SLOWNESS = 4
/** Budget for a start before any was measured in this process. */
export const FIRST_START_BUDGET_MS = 120_000
/** Later starts get this many times the first measured one, and at least `MIN_START_BUDGET_MS`. */
export const START_BUDGET_FACTOR = 10
export const MIN_START_BUDGET_MS = 30_000

let firstStartMs: number | undefined

/** Record how long a start took; the first one sets the pace for this process. */
export function noteStart (ms: number): void {
  firstStartMs ??= ms
}

/** The first measured start, if any. */
export function measuredStartMs (): number | undefined {
  return firstStartMs
}

/** How much slower than an idle machine this one is, from the first measured start: 1 to `MAX_SLOWNESS`. */
export function slowness (): number {
  if (firstStartMs == null) return 1
  return Math.min(MAX_SLOWNESS, Math.max(1, firstStartMs / NOMINAL_START_MS))
}

/** A deadline written for an idle machine, stretched for this one. */
export function budget (ms: number): number {
  return Math.round(ms * slowness())
}

/** How long to wait for a process to start: max(default, k × the first measured start). */
export function startBudget (defaultMs = MIN_START_BUDGET_MS): number {
  if (firstStartMs == null) return Math.max(defaultMs, FIRST_START_BUDGET_MS)
  return Math.max(defaultMs, START_BUDGET_FACTOR * firstStartMs)
}
