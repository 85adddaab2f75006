/**
 * Every process a test or benchmark starts (agents, coordinators, probes,
 * brokers, socat, CLI runs, stress loops...) starts here, and is ended on
 * every way out:
 * - the test stops it (`stop()`, `kill()`, or `t.teardown` when started with `{ t }`);
 * - the test process exits, fails, throws or gets SIGINT/SIGTERM/SIGHUP, or
 *   tap's timeout (SIGALRM): every live child's process group gets SIGKILL,
 *   synchronously, on the way out;
 * - the test process is SIGKILLed (tap's timeout does that 0.5 s after
 *   SIGALRM): a watchdog (reaper.ts) that outlives it sees its pipe close
 *   and ends whatever it had started.
 *
 * Each child runs in a process group of its own (`detached`), so killing
 * the group also ends what the child started itself (an agent's action
 * scripts, `ip netns exec`'s program). Each carries two environment
 * markers: GATEMESH_TEST_RUN (the whole run: `.ci/run` and test/loop.sh set
 * it and list what is left of it afterwards) and GATEMESH_TEST_OWNER (this
 * test process: the reaper ends what carries it). Processes started by a
 * library (Chromium by Playwright) get the markers through `markedEnv()`.
 */
import { spawn, spawnSync, type ChildProcess, type IOType, type StdioOptions } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import type { Writable } from 'node:stream'
import { onExit } from 'signal-exit'

export const RUN_ENV = 'GATEMESH_TEST_RUN'
export const OWNER_ENV = 'GATEMESH_TEST_OWNER'

const REAPER = new URL('./reaper.ts', import.meta.url).pathname

/**
 * How a node child is started: through `env -u NODE_OPTIONS`, which then
 * execs node in the same process. tap loads @tapjs/processinfo into every
 * process below a test (it patches spawn to put its `--import` into
 * NODE_OPTIONS, whatever env a test passes), and that hook turns source maps
 * on and keeps the source of every module the child loads: a coordinator
 * started with it was measured at 287–318 MB of RSS instead of 191 MB, so
 * the memory a test asserts would be the harness's, not gatemesh's. Nothing
 * started here is a test file; tap has nothing to learn from it.
 */
const NODE_HOOKLESS = ['/usr/bin/env', '-u', 'NODE_OPTIONS'] as const

/** This run's id: inherited from `.ci/run`/test/loop.sh, else one of this process's own. */
export const RUN_ID = process.env[RUN_ENV] ?? `local-${process.pid}-${randomBytes(4).toString('hex')}`
/** This test process's token: unique, so a reused pid cannot make another process look like ours. */
export const OWNER_TOKEN = `${process.pid}-${randomBytes(6).toString('hex')}`

// children started by anything in this process (a library, a raw spawn) inherit both markers
process.env[RUN_ENV] = RUN_ID
process.env[OWNER_ENV] = OWNER_TOKEN

/** `env` (default: this process's environment) with the markers added. */
export function markedEnv (env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, [RUN_ENV]: RUN_ID, [OWNER_ENV]: OWNER_TOKEN }
}

/** What `t.teardown` needs; tap's `Test` fits (helpers used by benchmarks must not import tap). */
export interface Teardown {
  teardown: (fn: () => unknown) => void
}

export interface StartInit {
  /** shown in errors and in the list of what was left running. @default the command */
  name?: string
  cwd?: string
  /** added to this process's environment (or replacing it, with `bareEnv`); the markers are always added */
  env?: NodeJS.ProcessEnv
  /** start from `env` alone instead of this process's environment */
  bareEnv?: boolean
  /** @default ['ignore', 'ignore', 'ignore'] */
  stdio?: StdioOptions
  /** signal `stop()` sends first. @default 'SIGTERM' */
  stopSignal?: NodeJS.Signals
  /** how long `stop()` waits after `stopSignal` before SIGKILL. @default 10000 */
  graceMs?: number
  /** stop it when this test ends */
  t?: Teardown
  /**
   * Keep this process alive while the child runs. Off by default: a test
   * file that ends or throws with children still running must exit (its
   * exit hook then kills them) rather than hang until tap's timeout.
   * Awaiting `exited`, or listening for the child's 'exit' or 'close',
   * keeps this process alive until the child exits.
   * @default false
   */
  ref?: boolean
}

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

const live = new Set<TestProcess>()

/** A child process in its own process group, registered until it exits. */
export class TestProcess {
  readonly name: string
  readonly child: ChildProcess
  readonly #exited: Promise<Exit>
  /** why it could not be started (ENOENT, EACCES...) */
  error?: Error
  readonly #init: StartInit
  #exit?: Exit

  constructor (command: string, args: readonly string[], init: StartInit = {}) {
    this.name = init.name ?? [command, ...args].join(' ').slice(0, 200)
    this.#init = init
    watchdog()
    // node children run without tap's process-info hook: see NODE_HOOKLESS
    const hookless = command === process.execPath
    this.child = spawn(hookless ? NODE_HOOKLESS[0] : command, hookless ? [...NODE_HOOKLESS.slice(1), command, ...args] : args, {
      cwd: init.cwd,
      env: markedEnv(init.bareEnv === true ? (init.env ?? {}) : { ...process.env, ...init.env }),
      stdio: init.stdio ?? 'ignore',
      detached: true
    })
    const pid = this.child.pid
    this.#exited = new Promise(resolve => {
      this.child.once('error', err => {
        // never started (ENOENT...): nothing to kill
        if (pid != null) return
        this.error = err
        this.#settle({ code: null, signal: null }, resolve)
      })
      this.child.once('exit', (code, signal) => {
        // whatever the child started in its group goes with it
        if (pid != null) killGroup(pid, 'SIGKILL')
        this.#settle({ code, signal }, resolve)
      })
    })
    if (pid != null) {
      live.add(this)
      reaper?.write(`+${pid}\n`)
    }
    if (init.ref !== true) {
      this.child.unref()
      for (const s of this.child.stdio) (s as { unref?: () => void } | null)?.unref?.()
      // a test that waits on the child's own events must not see this process exit first
      const child = this.child
      for (const method of ['on', 'once', 'addListener'] as const) {
        const original = child[method].bind(child) as (event: string, listener: (...args: any[]) => void) => ChildProcess
        child[method] = ((event: string, listener: (...args: any[]) => void) => {
          if ((event === 'exit' || event === 'close') && this.running) child.ref()
          return original(event, listener)
        }) as ChildProcess['on']
      }
    }
    init.t?.teardown(async () => { await this.stop() })
  }

  /** Resolves when the child has exited (and its group's stragglers are killed); awaiting it keeps this process alive. */
  get exited (): Promise<Exit> {
    if (this.running) this.child.ref()
    return this.#exited
  }

  #settle (exit: Exit, resolve: (e: Exit) => void): void {
    if (this.#exit != null) return
    this.#exit = exit
    live.delete(this)
    if (this.child.pid != null) reaper?.write(`-${this.child.pid}\n`)
    resolve(exit)
  }

  get pid (): number | undefined {
    return this.child.pid
  }

  get running (): boolean {
    return this.#exit == null && this.child.pid != null
  }

  /** How it ended, once it has. */
  get exit (): Exit | undefined {
    return this.#exit
  }

  /** Send a signal to the child alone (e.g. SIGSTOP/SIGCONT, or SIGTERM to see how it handles it). */
  signal (signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal)
  }

  /** SIGKILL the child's whole process group (kill -9 as a test step). */
  kill (): void {
    if (this.running) killGroup(this.child.pid!, 'SIGKILL')
  }

  /** Ask it to stop (`stopSignal`, SIGCONT in case it is stopped), wait up to `graceMs`, then SIGKILL its group. */
  async stop (graceMs = this.#init.graceMs ?? 10_000): Promise<Exit | undefined> {
    if (!this.running) return this.#exit
    this.child.kill(this.#init.stopSignal ?? 'SIGTERM')
    this.child.kill('SIGCONT')
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<'late'>(resolve => { timer = setTimeout(() => { resolve('late') }, graceMs) })
    if (await Promise.race([this.exited, late]) === 'late') this.kill()
    clearTimeout(timer)
    return await this.exited
  }
}

/** Start a long-running process; see `StartInit`. */
export function start (command: string, args: readonly string[], init: StartInit = {}): TestProcess {
  return new TestProcess(command, args, init)
}

export interface RunInit extends Omit<StartInit, 'stdio' | 'stopSignal' | 'graceMs'> {
  /** kill its group after this long and reject. @default 120000 */
  timeoutMs?: number
  /** written to its stdin, which is then closed */
  input?: string
  /** stderr straight to this process's stderr instead of being captured */
  inheritStderr?: boolean
}

export interface RunError extends Error {
  /** the exit code, as execFile's errors have it */
  code?: number | null
  signal?: NodeJS.Signals | null
  killed?: boolean
  stdout: string
  stderr: string
}

/**
 * Run a command to completion, like `execFile`: resolves with its output,
 * rejects with an error carrying `code`, `stdout` and `stderr` when it exits
 * non-zero or outlives `timeoutMs` (then its whole group is killed).
 */
export async function run (command: string, args: readonly string[], init: RunInit = {}): Promise<{ stdout: string, stderr: string }> {
  const stdio: IOType[] = ['pipe', 'pipe', init.inheritStderr === true ? 'inherit' : 'pipe'] as IOType[]
  const p = new TestProcess(command, args, { ...init, stdio, ref: true })
  let stdout = ''
  let stderr = ''
  p.child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  p.child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const stdin = p.child.stdin as Writable
  stdin.on('error', () => {})
  stdin.end(init.input ?? '')
  // 'close' comes after 'exit' and the last output
  const closed = new Promise(resolve => { p.child.once('close', resolve) })
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; p.kill() }, init.timeoutMs ?? 120_000)
  const outcome = await p.exited
  clearTimeout(timer)
  if (p.error != null) throw Object.assign(p.error, { stdout, stderr })
  await closed
  if (timedOut || outcome.code !== 0) {
    const why = timedOut ? `timed out after ${init.timeoutMs ?? 120_000} ms` : outcome.signal != null ? `killed by ${outcome.signal}` : `exited with ${String(outcome.code)}`
    const err = new Error(`${p.name}: ${why}${stderr === '' ? '' : `\n${stderr.slice(-4000)}`}`) as RunError
    Object.assign(err, { code: outcome.code, signal: outcome.signal, killed: timedOut, stdout, stderr })
    throw err
  }
  return { stdout, stderr }
}

/** Every child still running, e.g. to list in a failure message. */
export function running (): TestProcess[] {
  return [...live].filter(p => p.running)
}

/** Stop every child still running (for a test's or a benchmark's own clean-up). */
export async function stopAll (graceMs?: number): Promise<void> {
  await Promise.all(running().map(async p => await p.stop(graceMs)))
}

function killGroup (pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal)
  } catch {}
}

/** SIGKILL every live child's group now, then remove the network namespaces left; safe in an 'exit' handler (synchronous). */
export function killAllSync (): void {
  for (const p of live) if (p.running) killGroup(p.child.pid!, 'SIGKILL')
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 })
  namespaces.clear()
}

const namespaces = new Set<string>()

/**
 * A network namespace this process created: removed on the way out if the
 * test has not removed it (`forgetNetns` once it has), by the reaper if
 * this process is killed outright.
 */
export function watchNetns (name: string): void {
  watchdog()
  namespaces.add(name)
  reaper?.write(`+netns:${name}\n`)
}

export function forgetNetns (name: string): void {
  namespaces.delete(name)
  reaper?.write(`-netns:${name}\n`)
}

let reaper: Writable | undefined
let installed = false

/** The exit and signal hooks, and the reaper for when this process is killed outright (once, on the first start). */
export function watchdog (): void {
  if (installed) return
  installed = true
  // exit (normal, uncaught error), SIGINT, SIGTERM, SIGHUP...: kill, then let the process go as it would have
  onExit(() => { killAllSync() })
  // tap's timeout sends SIGALRM and handles it itself (reports, then kills the process)
  if (process.env.TAP === '1') process.on('SIGALRM', killAllSync)
  const child = spawn(process.execPath, [REAPER, OWNER_TOKEN], {
    stdio: ['pipe', 'ignore', 'inherit'],
    detached: true,
    env: markedEnv()
  })
  child.on('error', err => { console.error(`test process reaper did not start: ${err.message}`) })
  child.unref()
  const stdin = child.stdin!
  stdin.on('error', () => {})
  ;(stdin as unknown as { unref?: () => void }).unref?.()
  reaper = stdin
}

/**
 * `promisify(execFile)` through this module: same options (`env` replaces
 * the environment, `timeout` in ms) and the same errors (`code`, `stdout`,
 * `stderr`), for tests written against execFile.
 */
export async function exec (file: string, args: readonly string[] = [], options: { env?: NodeJS.ProcessEnv, cwd?: string, timeout?: number } = {}): Promise<{ stdout: string, stderr: string }> {
  return await run(file, args, {
    ...(options.env == null ? {} : { env: options.env, bareEnv: true }),
    ...(options.cwd == null ? {} : { cwd: options.cwd }),
    ...(options.timeout == null || options.timeout === 0 ? {} : { timeoutMs: options.timeout })
  })
}
