import { ScriptError, ScriptSandboxError, ScriptTimeoutError, SandboxSetupError } from './errors.ts'
import { Sandbox } from './sandbox/sandbox.ts'
import type { Logger } from 'pino'

export interface ScriptRun {
  /** absolute path of the script (inside its bundle) */
  path: string
  /** the instance's scratch directory: the only one it may write to, and its working directory */
  scratch: string
  /** written to its stdin as JSON */
  input: unknown
  args?: string[]
  /** @default 10000 */
  timeoutMs?: number
  /** V8 heap cap; as much again is allowed outside the heap (Buffers). @default 64 */
  maxMemoryMb?: number
  /** bytes the scratch directory may hold. @default 64 MiB */
  scratchBytes?: number
  /** `host:port` destinations the bundle's config.json declares; nothing else is reachable */
  network?: string[]
  env?: Record<string, string>
  logger: Pick<Logger, 'info' | 'warn'>
  /** @default a sandbox shared by the process, probed on first use */
  sandbox?: Sandbox
}

const MAX_STDERR = 4096
/** Time the sandbox gets beyond the script's own limit to set up and save the scratch directory. */
const SETUP_GRACE_MS = 15_000
export const DEFAULT_SCRATCH_BYTES = 64 * 1024 * 1024

let shared: Promise<Sandbox> | undefined

/** The process's sandbox when none is given (tests, tools): probed once. */
export async function defaultSandbox (log: Pick<Logger, 'info' | 'warn' | 'error'>): Promise<Sandbox> {
  shared ??= Sandbox.create({}, log)
  return await shared
}

/**
 * Run a bundle's action script in the sandbox (see sandbox/): its own
 * user (or user namespace), PID, mount and network namespaces, an
 * address-space limit, a scratch quota, and Node's permission model
 * inside — it may read its bundle and its scratch dir, write only its
 * scratch dir, and may not spawn processes, start workers or load native
 * addons. It gets the event as JSON on stdin; its stdout goes to the logs,
 * line by line. A script running past `timeoutMs` is killed.
 */
export async function runScript (run: ScriptRun): Promise<{ exitCode: number, lines: number }> {
  const sandbox = run.sandbox ?? await defaultSandbox({ ...run.logger, error: run.logger.warn })
  const timeoutMs = run.timeoutMs ?? 10_000
  const { child, release } = await sandbox.run({
    path: run.path,
    scratch: run.scratch,
    args: run.args ?? [],
    env: run.env ?? {},
    timeoutMs,
    maxMemoryMb: run.maxMemoryMb ?? 64,
    scratchBytes: run.scratchBytes ?? DEFAULT_SCRATCH_BYTES,
    network: run.network ?? []
  })
  const started = Date.now()
  let stderr = ''
  let lines = 0
  let partial = ''
  child.stdout!.setEncoding('utf8')
  child.stdout!.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n')
    partial = parts.pop() ?? ''
    for (const line of parts) {
      lines++
      run.logger.info({ script: run.path, line: line.slice(0, 2000) }, 'script output')
    }
  })
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (chunk: string) => { stderr = (stderr + chunk).slice(-MAX_STDERR) })
  // a script that never reads stdin must not fail the run with EPIPE
  child.stdin!.on('error', () => {})
  child.stdin!.end(JSON.stringify(run.input) + '\n')

  // the sandbox enforces the limit itself; this is the backstop should its init hang
  let killed = false
  const timer = setTimeout(() => {
    killed = true
    kill(child)
  }, timeoutMs + (sandbox.isolation.mode === 'none' ? 0 : SETUP_GRACE_MS))
  let exitCode: number | null
  let signal: NodeJS.Signals | null
  try {
    [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', reject)
      child.once('close', (code, sig) => { resolve([code, sig]) })
    })
  } finally {
    clearTimeout(timer)
    await release()
  }
  const elapsed = Date.now() - started
  if (partial !== '') {
    lines++
    run.logger.info({ script: run.path, line: partial.slice(0, 2000) }, 'script output')
  }
  // the sandbox's init passes on 128 + the signal that ended the script
  if (signal == null && exitCode != null && exitCode > 128 && exitCode < 160 && sandbox.isolation.mode !== 'none') signal = signalName(exitCode - 128)
  const details = { exitCode, signal, stderr }
  const timedOut = killed || ((exitCode === 124 || signal === 'SIGKILL' || signal === 'SIGTERM') && elapsed >= timeoutMs)
  if (timedOut) throw new ScriptTimeoutError(`script ${run.path} ran past ${timeoutMs} ms and was killed`, { ...details, signal: signal ?? 'SIGKILL' })
  if (exitCode === 0) return { exitCode, lines }
  const setup = /^gatemesh-sandbox: (.*)$/m.exec(stderr)
  if (exitCode === 125 && setup != null) throw new SandboxSetupError(`the sandbox for ${run.path} could not be set up: ${setup[1]}`, details)
  if (/ERR_ACCESS_DENIED/.test(stderr)) {
    const what = /permission: '?([A-Za-z]+)/i.exec(stderr)?.[1] ?? 'an operation'
    throw new ScriptSandboxError(`script ${run.path} was stopped by the sandbox (${what} denied)`, details)
  }
  if (signal != null || /heap out of memory|Allocation failed|allocation failed/i.test(stderr)) {
    throw new ScriptError(`script ${run.path} was killed (${signal ?? 'out of memory'})`, details)
  }
  throw new ScriptError(`script ${run.path} exited with code ${exitCode}: ${headline(stderr)}`, details)
}

/** The line of a Node error report that says what went wrong (`Error: kill EPERM`), not its version footer. */
function headline (stderr: string): string {
  const lines = stderr.trim().split('\n').map(l => l.trim()).filter(l => l !== '')
  return (lines.find(l => /^([A-Z]\w*)?Error\b.*:/.test(l)) ?? lines.filter(l => !/^Node\.js v/.test(l)).pop() ?? '').slice(0, 300)
}

function kill (child: ReturnType<typeof import('node:child_process').spawn>): void {
  // the plain mode starts its child in a process group of its own: take all of it
  try {
    if (child.pid != null) process.kill(-child.pid, 'SIGKILL')
  } catch {}
  child.kill('SIGKILL')
}

function signalName (n: number): NodeJS.Signals | null {
  const names: Record<number, NodeJS.Signals> = { 1: 'SIGHUP', 2: 'SIGINT', 6: 'SIGABRT', 9: 'SIGKILL', 11: 'SIGSEGV', 13: 'SIGPIPE', 14: 'SIGALRM', 15: 'SIGTERM', 25: 'SIGXFSZ' }
  return names[n] ?? null
}
