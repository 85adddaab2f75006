import { closeSync, openSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { sleep } from './cluster.ts'
import { start, type TestProcess } from './processes.ts'

/** The parts of a systemd service unit that decide how its process is started and restarted. */
export interface UnitContract {
  execStart: string[]
  /** ExecStartPre lines that run as the service user; `+` (privileged) ones are listed apart */
  execStartPre: string[][]
  privilegedPre: string[]
  environment: Record<string, string>
  workingDirectory?: string
  restart: string
  restartSec: number
  successExitStatus: number[]
  restartForceExitStatus: number[]
  restartPreventExitStatus: number[]
  timeoutStopSec: number
}

function seconds (value: string | undefined, fallback: number): number {
  if (value == null) return fallback
  const m = /^(\d+(?:\.\d+)?)(ms|s|min)?$/.exec(value.trim())
  if (m == null) throw new Error(`unit: cannot read the time span "${value}"`)
  const n = Number(m[1])
  return m[2] === 'ms' ? n / 1000 : m[2] === 'min' ? n * 60 : n
}

/** Read a unit's [Service] section, with device paths moved under a test root. */
export function parseUnit (text: string, move: (s: string) => string = s => s): UnitContract {
  const lines = text.split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  const all = (key: string): string[] => lines.filter(l => l.startsWith(`${key}=`)).map(l => l.slice(key.length + 1))
  const one = (key: string): string | undefined => all(key).at(-1)
  const codes = (key: string): number[] => all(key).flatMap(v => v.split(/\s+/)).filter(v => /^\d+$/.test(v)).map(Number)
  const start = one('ExecStart')
  if (start == null) throw new Error('the unit has no ExecStart')
  const environment: Record<string, string> = {}
  for (const e of all('Environment')) {
    const i = e.indexOf('=')
    environment[e.slice(0, i)] = e.slice(i + 1)
  }
  const pre = all('ExecStartPre')
  const wd = one('WorkingDirectory')
  return {
    execStart: move(start).split(' '),
    execStartPre: pre.filter(p => !p.startsWith('+')).map(p => move(p.replace(/^-/, '')).split(' ')),
    privilegedPre: pre.filter(p => p.startsWith('+')),
    environment,
    ...(wd == null ? {} : { workingDirectory: move(wd) }),
    restart: one('Restart') ?? 'no',
    restartSec: seconds(one('RestartSec'), 0.1),
    successExitStatus: codes('SuccessExitStatus'),
    restartForceExitStatus: codes('RestartForceExitStatus'),
    restartPreventExitStatus: codes('RestartPreventExitStatus'),
    timeoutStopSec: seconds(one('TimeoutStopSec'), 90)
  }
}

/** Signals systemd counts as a clean end of a service (besides exit 0). */
const CLEAN_SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGPIPE']

export interface RunRecord {
  startedAt: number
  pid?: number
  code: number | null
  signal: NodeJS.Signals | null
  endedAt?: number
}

/**
 * Stands in for systemd in tests: runs a unit's ExecStartPre and ExecStart,
 * and restarts it by the unit's own rules (Restart=on-failure,
 * RestartSec, SuccessExitStatus, RestartForceExitStatus,
 * RestartPreventExitStatus, the default start limit of 5 starts in 10 s).
 * Like systemd's control group, the process runs in a group of its own and
 * the whole group is signalled on stop, so nothing it started outlives it.
 * Privileged ExecStartPre lines (`+`: chown to the service user, which a
 * test root does not have) are skipped.
 */
export class UnitSupervisor {
  readonly unit: UnitContract
  readonly log: string
  readonly runs: RunRecord[] = []
  #child?: TestProcess
  #stopping = false
  #loop?: Promise<void>
  #failed?: string

  /** added to the unit's environment (what a test needs on top, e.g. its log level) */
  readonly extraEnv: Record<string, string>
  /** put before the main command, e.g. `ip netns exec NS` to run the unit in a test's namespace */
  readonly prefix: string[]

  constructor (unit: UnitContract, options: { log: string, env?: Record<string, string>, prefix?: string[] }) {
    this.unit = unit
    this.log = options.log
    this.extraEnv = options.env ?? {}
    this.prefix = options.prefix ?? []
  }

  /** A unit file from an unpacked image root, its device paths moved under `root`. */
  static async fromRoot (root: string, unitName: string, options: { log: string, env?: Record<string, string> }): Promise<UnitSupervisor> {
    const text = await readFile(join(root, 'etc/systemd/system', unitName), 'utf8')
    const move = (s: string): string => s.replaceAll('/opt/gatemesh', join(root, 'opt/gatemesh')).replaceAll('/var/lib/gatemesh', join(root, 'var/lib/gatemesh'))
    return new UnitSupervisor(parseUnit(text, move), options)
  }

  get pid (): number | undefined {
    return this.#child?.running === true ? this.#child.pid : undefined
  }

  get running (): boolean {
    return this.pid != null
  }

  /** Why it gave up restarting, like a unit in the `failed` state. */
  get failed (): string | undefined {
    return this.#failed
  }

  start (): void {
    if (this.#loop != null) throw new Error('already started')
    this.#stopping = false
    this.#failed = undefined
    this.#loop = this.#run().finally(() => { this.#loop = undefined })
  }

  // through the suite's process helper: its own group, ended on every way out of the test
  #spawn (argv: string[]): TestProcess {
    const out = openSync(this.log, 'a')
    const child = start(argv[0]!, argv.slice(1), {
      name: `unit ${argv.join(' ').slice(0, 120)}`,
      ...(this.unit.workingDirectory == null ? {} : { cwd: this.unit.workingDirectory }),
      env: { PATH: '/usr/bin:/bin', ...this.unit.environment, ...this.extraEnv },
      bareEnv: true,
      stdio: ['ignore', out, out]
    })
    closeSync(out)
    return child
  }

  async #run (): Promise<void> {
    const starts: number[] = []
    while (!this.#stopping) {
      const now = Date.now()
      starts.push(now)
      if (starts.filter(s => now - s < 10_000).length > 5) {
        this.#failed = 'start request repeated too quickly'
        return
      }
      for (const pre of this.unit.execStartPre) {
        const { code } = await this.#spawn(pre).exited
        if (code !== 0) { this.#failed = `ExecStartPre ${pre.join(' ')} exited with ${String(code)}`; return }
      }
      const record: RunRecord = { startedAt: Date.now(), code: null, signal: null }
      const child = this.#spawn([...this.prefix, ...this.unit.execStart])
      if (child.pid != null) record.pid = child.pid
      this.runs.push(record)
      this.#child = child
      // what is left of the group goes with the main process (the helper kills it), as with KillMode=control-group
      const { code, signal } = await child.exited
      record.code = code
      record.signal = signal
      record.endedAt = Date.now()
      if (this.#stopping || !this.#restarts(record)) return
      await sleep(this.unit.restartSec * 1000)
    }
  }

  #restarts (r: RunRecord): boolean {
    if (r.code != null && this.unit.restartForceExitStatus.includes(r.code)) return true
    if (r.code != null && this.unit.restartPreventExitStatus.includes(r.code)) return false
    if (this.unit.restart === 'always') return true
    if (this.unit.restart !== 'on-failure') return false
    if (r.signal != null) return !CLEAN_SIGNALS.includes(r.signal)
    return r.code !== 0 && !this.unit.successExitStatus.includes(r.code!)
  }

  /** `systemctl stop`: SIGTERM to the group, SIGKILL after TimeoutStopSec. */
  async stop (): Promise<void> {
    this.#stopping = true
    const child = this.#child
    if (child?.running === true) {
      try { process.kill(-child.pid!, 'SIGTERM') } catch {}
      await Promise.race([child.exited, sleep(this.unit.timeoutStopSec * 1000)])
      child.kill()
    }
    await this.#loop
  }

  /** Kill the whole group at once (a power cut, for the agent). */
  kill (): void {
    this.#stopping = true
    this.#child?.kill()
  }
}
