import { spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ScriptError, ScriptSandboxError, ScriptTimeoutError } from './errors.ts'
import type { Logger } from 'pino'

export interface ScriptRun {
  /** absolute path of the script (inside its bundle) */
  path: string
  /** the only directory it may write to; also its working directory */
  scratch: string
  /** written to its stdin as JSON */
  input: unknown
  args?: string[]
  /** @default 10000 */
  timeoutMs?: number
  /** V8 heap cap. @default 64 */
  maxMemoryMb?: number
  env?: Record<string, string>
  logger: Pick<Logger, 'info' | 'warn'>
}

const MAX_STDERR = 4096

/**
 * Instrumentation in the agent's process (APM agents, coverage tools, test
 * runners) hooks every spawn and adds its own `--import` to NODE_OPTIONS,
 * which would run code of theirs inside the sandbox — code the sandbox may
 * not even read. `env -i` starts the script with exactly the environment
 * given here and nothing else.
 */
const ENV = '/usr/bin/env'

/**
 * Run a bundle's action script in a child Node process under Node's
 * permission model: it may read its bundle and its scratch dir, write only
 * its scratch dir, and may not spawn processes, start workers or load native
 * addons (none of --allow-child-process, --allow-worker, --allow-addons is
 * given). It gets the event as JSON on stdin; its stdout goes to the logs,
 * line by line. A script running past `timeoutMs` is killed, and its heap is
 * capped with --max-old-space-size.
 */
export async function runScript (run: ScriptRun): Promise<{ exitCode: number, lines: number }> {
  await mkdir(run.scratch, { recursive: true, mode: 0o700 })
  const timeoutMs = run.timeoutMs ?? 10_000
  const argv = [
    '--permission',
    `--allow-fs-read=${dirname(run.path)}`,
    `--allow-fs-read=${run.scratch}`,
    `--allow-fs-write=${run.scratch}`,
    `--max-old-space-size=${run.maxMemoryMb ?? 64}`,
    '--disable-warning=ExperimentalWarning',
    run.path,
    ...(run.args ?? [])
  ]
  // nothing of the agent's environment: no credentials, no NODE_OPTIONS loaders
  const env = { PATH: '/usr/bin:/bin', HOME: run.scratch, ...run.env }
  const child = spawn(ENV, ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, ...argv], {
    cwd: run.scratch,
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let stderr = ''
  let lines = 0
  let partial = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n')
    partial = parts.pop() ?? ''
    for (const line of parts) {
      lines++
      run.logger.info({ script: run.path, line: line.slice(0, 2000) }, 'script output')
    }
  })
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => { stderr = (stderr + chunk).slice(-MAX_STDERR) })
  // a script that never reads stdin must not fail the run with EPIPE
  child.stdin.on('error', () => {})
  child.stdin.end(JSON.stringify(run.input) + '\n')

  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    child.kill('SIGKILL')
  }, timeoutMs)
  const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code, sig) => { resolve([code, sig]) })
  }).finally(() => { clearTimeout(timer) })
  if (partial !== '') {
    lines++
    run.logger.info({ script: run.path, line: partial.slice(0, 2000) }, 'script output')
  }
  const details = { exitCode, signal, stderr }
  if (timedOut) throw new ScriptTimeoutError(`script ${run.path} ran past ${timeoutMs} ms and was killed`, details)
  if (exitCode === 0) return { exitCode, lines }
  if (/ERR_ACCESS_DENIED/.test(stderr)) {
    const what = /permission: '?([A-Za-z]+)/i.exec(stderr)?.[1] ?? 'an operation'
    throw new ScriptSandboxError(`script ${run.path} was stopped by the sandbox (${what} denied)`, details)
  }
  if (signal != null || /heap out of memory|Allocation failed/.test(stderr)) {
    throw new ScriptError(`script ${run.path} was killed (${signal ?? 'out of memory'})`, details)
  }
  throw new ScriptError(`script ${run.path} exited with code ${exitCode}: ${stderr.trim().split('\n').slice(-1)[0] ?? ''}`, details)
}
