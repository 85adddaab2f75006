/**
 * Waits that scale with how slow the machine is right now. The first agent
 * a test process starts is timed; every later deadline is stretched by how
 * much slower that start was than on an idle machine. On a 2-core machine
 * shared with other work a start can take ten times as long as on an idle
 * one, and so does everything after it. A test that starts no agent of its
 * own can `calibrate()` instead.
 */
import { run } from './processes.ts'

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
let contention: number | undefined

/** Record how long a start took; the first one sets the pace for this process. */
export function noteStart (ms: number): void {
  firstStartMs ??= ms
}

/** The first measured start, if any. */
export function measuredStartMs (): number | undefined {
  return firstStartMs
}

/** How much slower than an idle machine this one is, from the first measured start (or `calibrate()`): 1 to `MAX_SLOWNESS`. */
export function slowness (): number {
  const measured = firstStartMs != null ? firstStartMs / NOMINAL_START_MS : contention
  if (measured == null) return 1
  return Math.min(MAX_SLOWNESS, Math.max(1, measured))
}

// fixed CPU work in a child: how long it took against how much CPU it got is how contended the machine is
const CALIBRATION = `const { createHash } = require('node:crypto')
const buf = Buffer.alloc(1 << 20, 7)
const c0 = process.cpuUsage(); const t0 = performance.now()
for (let i = 0; i < 300; i++) createHash('sha256').update(buf).digest()
const c = process.cpuUsage(c0)
console.log(JSON.stringify({ wallMs: performance.now() - t0, cpuMs: (c.user + c.system) / 1000 }))`

/**
 * For a test that starts no agent through Cluster (a demo, a CLI run): time
 * a fixed piece of CPU work in a child process, wall clock against the CPU
 * it got, and stretch this process's waits by that. A start measured later
 * takes over.
 */
export async function calibrate (): Promise<number> {
  if (firstStartMs == null && contention == null) {
    const { stdout } = await run(process.execPath, ['-e', CALIBRATION], { timeoutMs: 120_000 })
    const { wallMs, cpuMs } = JSON.parse(stdout) as { wallMs: number, cpuMs: number }
    contention = cpuMs > 0 ? wallMs / cpuMs : 1
  }
  return slowness()
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
