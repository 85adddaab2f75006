import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { chmod, lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { INIT_SCRIPT } from './init-script.ts'
import { layOut, NetProxy, relaySource } from './network.ts'
import { findTools, nodeBaselineMb, scriptUser, type Isolation, type IsolationMode } from './probe.ts'
import type { Logger } from 'pino'

export interface SandboxInit {
  /** Run directories go here (0700); leftovers of earlier runs are removed. @default a temporary directory of this process's own */
  runDir?: string
  /** Directories scripts must not see (the agent's data directory). */
  hide?: string[]
  /** The user scripts run as when the agent is root; created when missing. @default 'gatemesh-script' */
  user?: string
  /** The agent's API port: no declared destination reaches it. */
  apiPort?: number
  /** Use this mode, or nothing weaker (tests of the fallbacks; 'none' for machines known to lack namespaces). @default the strongest that works */
  mode?: IsolationMode
}

/** One script run as the sandbox needs it. */
export interface SandboxRun {
  /** absolute path of the script inside its bundle directory */
  path: string
  /** the instance's persistent scratch directory */
  scratch: string
  args: string[]
  env: Record<string, string>
  timeoutMs: number
  /** V8 heap cap; as much again is allowed outside the heap (Buffers) */
  maxMemoryMb: number
  scratchBytes: number
  /** `host:port` the bundle declares */
  network: string[]
}

export interface SandboxProcess {
  child: ChildProcess
  /** when the child has exited: close the relay, remove the run directory, let the next run of this scratch go */
  release: () => Promise<void>
}

/** Where the script's world is mounted inside its namespaces: a directory every Linux has, shadowed there only. */
const INSIDE = '/run'
const DEFAULT_USER = 'gatemesh-script'
/** Address space beyond Node's own reservation and twice the heap cap: code, stacks, libuv. */
const AS_SLACK_MB = 64

/**
 * Runs action scripts in the strongest isolation this machine offers (see
 * probe.ts for the modes), decided once by trying it. Runs that share a
 * scratch directory take turns: each copies it in and saves it back.
 */
export class Sandbox {
  readonly isolation: Isolation
  readonly #init: SandboxInit
  readonly #tools: Record<string, string>
  readonly #baselineMb: number
  readonly #runDir: string
  readonly #log: Pick<Logger, 'info' | 'warn' | 'error'>
  readonly #turns = new Map<string, Promise<void>>()

  private constructor (isolation: Isolation, init: SandboxInit, tools: Record<string, string>, baselineMb: number, runDir: string, log: Pick<Logger, 'info' | 'warn' | 'error'>) {
    this.isolation = isolation
    this.#init = init
    this.#tools = tools
    this.#baselineMb = baselineMb
    this.#runDir = runDir
    this.#log = log
  }

  /** Find the strongest mode that works here by running a script in it. */
  static async create (init: SandboxInit, log: Pick<Logger, 'info' | 'warn' | 'error'>): Promise<Sandbox> {
    const runDir = init.runDir ?? await ownTempDir()
    await mkdir(runDir, { recursive: true, mode: 0o700 })
    await chmod(runDir, 0o700)
    // left by runs the agent did not live to clean up (their mounts died with their namespaces)
    for (const stale of await readdir(runDir)) {
      if (stale.startsWith('run-') || stale.startsWith('trial-')) await rm(join(runDir, stale), { recursive: true, force: true })
    }
    const { found, missing: missingTools } = await findTools()
    const baselineMb = await nodeBaselineMb(process.execPath).catch(() => 800)
    const root = process.getuid?.() === 0
    const order: IsolationMode[] = (['user', 'userns', 'none'] as const).filter(m => m !== 'user' || root)
    const start = init.mode == null ? 0 : Math.max(0, order.indexOf(init.mode))
    const missing: string[] = []
    if (!root && init.mode == null) missing.push('user: the agent is not root, so it cannot run scripts as another user')
    for (const mode of order.slice(start)) {
      const needed = mode === 'none' ? ['env'] : ['unshare', 'setpriv', 'prlimit', 'timeout', 'ip', 'sh', 'cp', 'find', 'mount', 'env']
      const lacking = needed.filter(t => missingTools.includes(t))
      if (lacking.length > 0) {
        missing.push(`${mode}: ${lacking.join(', ')} not found (util-linux, coreutils, iproute2)`)
        continue
      }
      let user: Isolation['user']
      if (mode === 'user') {
        const chosen = await scriptUser(init.user ?? DEFAULT_USER)
        user = chosen.user
        if (chosen.note != null) log.warn({ service: 'sandbox' }, chosen.note)
      }
      if (INSIDE === dirname(process.execPath) || process.execPath.startsWith(`${INSIDE}/`)) {
        missing.push(`${mode}: the Node binary is under ${INSIDE}, which the sandbox shadows`)
        continue
      }
      const isolation = describe(mode, user, missing)
      const sandbox = new Sandbox(isolation, init, found, baselineMb, runDir, log)
      const failure = await sandbox.#trial()
      if (failure == null) return sandbox
      missing.push(`${mode}: ${failure}`)
    }
    // 'none' runs with what Node and prlimit give; it cannot fail its trial for want of namespaces
    return new Sandbox(describe('none', undefined, missing), init, found, baselineMb, runDir, log)
  }

  /** Start a script; the caller feeds stdin, reads stdout/stderr and waits for exit, then calls `release`. */
  async run (run: SandboxRun): Promise<SandboxProcess> {
    const turn = await this.#takeTurn(run.scratch)
    try {
      return this.isolation.mode === 'none' ? await this.#runPlain(run, turn) : await this.#runIsolated(run, turn)
    } catch (err) {
      turn()
      throw err
    }
  }

  /** Address-space limit for a script with this heap cap. */
  addressSpaceBytes (maxMemoryMb: number): number {
    return (this.#baselineMb + 2 * maxMemoryMb + AS_SLACK_MB) * 1024 * 1024
  }

  async #runIsolated (run: SandboxRun, turn: () => void): Promise<SandboxProcess> {
    const dir = await mkdtemp(join(this.#runDir, 'run-'))
    const net = join(dir, 'net')
    await mkdir(net, { mode: 0o755 })
    const { destinations, addresses, hosts } = layOut(run.network)
    await writeFile(join(dir, 'hosts'), hosts, { mode: 0o644 })
    await writeFile(join(dir, 'resolv'), '', { mode: 0o644 })
    const proxy = new NetProxy(run.path, this.#log, this.#init.apiPort == null ? {} : { ownApi: { port: this.#init.apiPort } })
    const release = async (): Promise<void> => {
      await proxy.close()
      await rm(dir, { recursive: true, force: true })
      turn()
    }
    try {
      await mkdir(run.scratch, { recursive: true, mode: 0o700 })
      await proxy.listen(destinations, net)
      const bundle = `${INSIDE}/bundle`
      const scratch = `${INSIDE}/scratch`
      const user = this.isolation.user
      const identity = user != null
        ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--']
        : ['setpriv', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--']
      const limits = [this.#tools.prlimit!, `--as=${this.addressSpaceBytes(run.maxMemoryMb)}`, `--fsize=${run.scratchBytes}`, '--nofile=256', '--core=0', ...(user != null ? ['--nproc=256'] : []), '--']
      const node = [
        process.execPath,
        '--permission',
        `--allow-fs-read=${bundle}`,
        `--allow-fs-read=${scratch}`,
        `--allow-fs-write=${scratch}`,
        `--max-old-space-size=${run.maxMemoryMb}`,
        '--disable-warning=ExperimentalWarning',
        ...(destinations.length > 0 ? ['--import', `data:text/javascript,${encodeURIComponent(relaySource(destinations, `${INSIDE}/net`))}`] : []),
        `${bundle}/${basename(run.path)}`,
        ...run.args
      ]
      // nothing of the agent's environment: no credentials, no NODE_OPTIONS loaders
      const env = ['-i', '-C', scratch, ...Object.entries({ PATH: '/usr/bin:/bin', HOME: scratch, ...run.env }).map(([k, v]) => `${k}=${v}`)]
      const unshare = [
        ...(this.isolation.mode === 'userns' ? ['--user', '--map-root-user'] : []),
        '--pid', '--fork', '--kill-child', '--mount', '--mount-proc', '--net', '--ipc', '--uts',
        '--', this.#tools.sh!, '-c', INIT_SCRIPT, 'gatemesh-sandbox',
        this.#tools.setpriv!, ...identity.slice(1), ...limits, this.#tools.env!, ...env, ...node
      ]
      const child = spawn(this.#tools.unshare!, unshare, {
        cwd: dir,
        stdio: ['pipe', 'pipe', 'pipe'],
        env: {
          PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
          GM_RUN: dir,
          GM_SCRATCH: run.scratch,
          GM_BUNDLE: dirname(run.path),
          GM_QUOTA: String(run.scratchBytes),
          GM_OWNER: user == null ? '' : `${user.uid}:${user.gid}`,
          GM_NET: '1',
          GM_ADDRS: addresses.join(' '),
          GM_HIDE: (this.#init.hide ?? []).join(' '),
          GM_TIMEOUT: (run.timeoutMs / 1000).toFixed(3),
          GM_INSIDE: INSIDE
        }
      })
      return { child, release }
    } catch (err) {
      await proxy.close()
      await rm(dir, { recursive: true, force: true })
      throw err
    }
  }

  /** No namespaces: Node's permission model, prlimit, and a scratch quota checked before the run. */
  async #runPlain (run: SandboxRun, turn: () => void): Promise<SandboxProcess> {
    await mkdir(run.scratch, { recursive: true, mode: 0o700 })
    const used = await bytesUnder(run.scratch)
    if (used >= run.scratchBytes) throw Object.assign(new Error(`the scratch directory holds ${used} bytes, at or past its quota of ${run.scratchBytes}`), { code: 'ERR_SCRATCH_QUOTA', permanent: true })
    const node = [process.execPath, '--permission', `--allow-fs-read=${dirname(run.path)}`, `--allow-fs-read=${run.scratch}`, `--allow-fs-write=${run.scratch}`, `--max-old-space-size=${run.maxMemoryMb}`, '--disable-warning=ExperimentalWarning', run.path, ...run.args]
    const env = ['-i', ...Object.entries({ PATH: '/usr/bin:/bin', HOME: run.scratch, ...run.env }).map(([k, v]) => `${k}=${v}`)]
    const prlimit = this.#tools.prlimit
    const argv = prlimit == null
      ? [this.#tools.env!, ...env, ...node]
      : [prlimit, `--as=${this.addressSpaceBytes(run.maxMemoryMb)}`, `--fsize=${run.scratchBytes - used}`, '--nofile=256', '--core=0', '--', this.#tools.env!, ...env, ...node]
    const child = spawn(argv[0]!, argv.slice(1), { cwd: run.scratch, stdio: ['pipe', 'pipe', 'pipe'], detached: true })
    return { child, release: async () => { turn() } }
  }

  /** Wait for the previous run of this scratch directory; returns the function that ends ours. */
  async #takeTurn (scratch: string): Promise<() => void> {
    const previous = this.#turns.get(scratch) ?? Promise.resolve()
    let done!: () => void
    const mine = new Promise<void>(resolve => { done = resolve })
    const chained = previous.then(async () => await mine)
    this.#turns.set(scratch, chained)
    await previous
    return () => {
      done()
      if (this.#turns.get(scratch) === chained) this.#turns.delete(scratch)
    }
  }

  /** Run a tiny script the way real ones run: does this mode work here? */
  async #trial (): Promise<string | undefined> {
    const dir = await mkdtemp(join(this.#runDir, 'trial-'))
    try {
      const bundle = join(dir, 'bundle')
      await mkdir(bundle, { mode: 0o755 })
      await chmod(dir, 0o755)
      await writeFile(join(bundle, 'trial.js'), 'require("node:fs").writeFileSync("t", "ok"); process.stdout.write("ok")', { mode: 0o644 })
      const { child, release } = await this.run({ path: join(bundle, 'trial.js'), scratch: join(dir, 'scratch'), args: [], env: {}, timeoutMs: 60_000, maxMemoryMb: 32, scratchBytes: 1024 * 1024, network: [] })
      let out = ''
      let err = ''
      child.stdin?.end()
      child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
      child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
      const code = await new Promise<number | null>(resolve => child.once('close', resolve))
      await release()
      if (code === 0 && out === 'ok') return undefined
      return (err.trim().split('\n').find(l => l.startsWith('gatemesh-sandbox:') || /unshare|setpriv|prlimit|Operation not permitted/.test(l)) ?? err.trim().split('\n').pop() ?? `exit ${code}`).slice(0, 300)
    } catch (err: any) {
      return String(err.message ?? err)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** A run directory for this process alone, removed when it exits. */
async function ownTempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gatemesh-sandbox-'))
  process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

function describe (mode: IsolationMode, user: Isolation['user'], missing: string[]): Isolation {
  const isolated = mode !== 'none'
  return {
    mode,
    ...(user == null ? {} : { user }),
    namespaces: isolated ? [...(mode === 'userns' ? ['user'] : []), 'pid', 'mount', 'network', 'ipc', 'uts'] : [],
    limits: isolated ? ['address space', 'file size', 'open files', ...(mode === 'user' ? ['processes'] : [])] : ['address space', 'file size', 'open files'],
    network: isolated ? 'declared destinations only' : 'unrestricted',
    scratch: isolated ? 'tmpfs quota' : 'file size limit and byte count',
    signals: isolated ? 'own processes only' : 'any process of the agent\'s user',
    missing: [...missing]
  }
}

/** Bytes of regular files under `dir` (links not followed). */
async function bytesUnder (dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await lstat(join(entry.parentPath, entry.name)).catch(() => ({ size: 0 }))).size
  }
  return total
}
