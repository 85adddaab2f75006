import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { GpioUnavailableError } from './errors.ts'

/**
 * libgpiod's command-line tools (`gpiomon`, `gpioget`, `gpioset`), the
 * character-device GPIO driver's way to the kernel. Two generations are in
 * the field with different command lines: 1.x (Debian 12, Raspberry Pi OS
 * bookworm) and 2.x (Debian 13, Raspberry Pi OS trixie). `gpiomon
 * --version` tells which; everything else here builds arguments and reads
 * output for that generation.
 */
export interface GpiodTools {
  /** 1 or 2: the libgpiod generation */
  major: 1 | 2
  /** e.g. `v1.6.3` */
  version: string
  /** absolute path of a tool, or its bare name to be found on PATH */
  path: (tool: 'gpiomon' | 'gpioget' | 'gpioset') => string
}

export interface LineSettings {
  /** chip name, number or path: `gpiochip0`, `0`, `/dev/gpiochip0` */
  chip: string
  /** line offset on the chip */
  line: number
  activeLow: boolean
  bias: 'as-is' | 'disable' | 'pull-up' | 'pull-down'
}

/** Environment for the tools: a fixed locale so their messages read the same everywhere. */
export function toolEnv (): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', LC_ALL: 'C' }
}

const INSTALL_HINT = "install libgpiod's tools (Debian, Ubuntu, Raspberry Pi OS: apt-get install gpiod)"
const detected = new Map<string, Promise<GpiodTools>>()

/**
 * Find the tools in `bin` (a directory) or on PATH and learn their
 * generation; cached per directory. Fails with GpioUnavailableError naming
 * the package to install when they are missing.
 */
export async function detectTools (id: string, bin?: string): Promise<GpiodTools> {
  const key = bin ?? ''
  let found = detected.get(key)
  if (found == null) {
    found = probe(bin)
    detected.set(key, found)
    // a failed probe (tools not installed yet) is tried again next time
    found.catch(() => { detected.delete(key) })
  }
  try {
    return await found
  } catch (err: any) {
    throw new GpioUnavailableError(`gpio ${id}: the character-device driver needs libgpiod's gpiomon, gpioget and gpioset: ${err.message}; ${INSTALL_HINT}`, id, { cause: err })
  }
}

async function probe (bin: string | undefined): Promise<GpiodTools> {
  const path = (tool: string): string => bin == null ? tool : join(bin, tool)
  const out = await new Promise<string>((resolve, reject) => {
    execFile(path('gpiomon'), ['--version'], { env: toolEnv(), timeout: 10_000, maxBuffer: 64 * 1024 }, (err, stdout) => {
      if (err != null) reject(new Error((err as NodeJS.ErrnoException).code === 'ENOENT' ? `${path('gpiomon')} was not found` : `${path('gpiomon')} --version failed: ${err.message}`))
      else resolve(stdout)
    })
  })
  // "gpiomon (libgpiod) v1.6.3"
  const m = /\(libgpiod\)\s+v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(out)
  if (m == null) throw new Error(`${path('gpiomon')} --version did not name a libgpiod version: ${JSON.stringify(out.slice(0, 80))}`)
  const major = Number(m[1])
  if (major !== 1 && major !== 2) throw new Error(`libgpiod v${m[1]}.${m[2]} is not supported (1.x and 2.x are)`)
  return { major, version: `v${m[1]}.${m[2]}${m[3] == null ? '' : `.${m[3]}`}`, path }
}

function lineFlags (t: GpiodTools, s: LineSettings): string[] {
  const flags = s.activeLow ? ['--active-low'] : []
  if (s.bias !== 'as-is') flags.push(t.major === 1 ? `--bias=${s.bias}` : '--bias', ...(t.major === 1 ? [] : [s.bias]))
  return flags
}

/**
 * `gpiomon` for one line, printing `<event> <offset>` per edge. 1.x prints
 * `%e` as 1 (rising) / 0 (falling) and needs `--line-buffered`; 2.x prints
 * 1 (rising) / 2 (falling) and flushes after each batch by itself.
 */
export function monitorArgs (t: GpiodTools, s: LineSettings, edge: 'rising' | 'falling' | 'both'): string[] {
  if (t.major === 1) {
    const edges = edge === 'rising' ? ['--rising-edge'] : edge === 'falling' ? ['--falling-edge'] : []
    return ['--line-buffered', '--format=%e %o', ...edges, ...lineFlags(t, s), s.chip, String(s.line)]
  }
  return ['--chip', s.chip, '--consumer', 'gatemesh', '--edges', edge, '--format=%e %o', ...lineFlags(t, s), String(s.line)]
}

/** The level after the edge a `gpiomon` line reports, or undefined for a line that is not an event. */
export function parseEvent (t: GpiodTools, text: string, line: number): 0 | 1 | undefined {
  const m = /^\s*(\d)\s+(\d+)\s*$/.exec(text)
  if (m == null || Number(m[2]) !== line) return undefined
  const falling = t.major === 1 ? '0' : '2'
  if (m[1] === '1') return 1
  if (m[1] === falling) return 0
  return undefined
}

export function getArgs (t: GpiodTools, s: LineSettings): string[] {
  return t.major === 1 ? [...lineFlags(t, s), s.chip, String(s.line)] : ['--chip', s.chip, '--consumer', 'gatemesh', ...lineFlags(t, s), String(s.line)]
}

/** `gpioget` prints `1` (1.x, 2.x with --numeric) or `"17"=active` (2.x). */
export function parseLevel (text: string): 0 | 1 | undefined {
  const v = text.trim()
  if (v === '1' || /=\s*active$/.test(v)) return 1
  if (v === '0' || /=\s*inactive$/.test(v)) return 0
  return undefined
}

/** `gpioset` holding the line at `value` until it is signalled (1.x needs `--mode=signal`; 2.x holds by default). */
export function setArgs (t: GpiodTools, s: LineSettings, value: 0 | 1): string[] {
  return t.major === 1
    ? ['--mode=signal', ...lineFlags(t, s), s.chip, `${s.line}=${value}`]
    : ['--chip', s.chip, '--consumer', 'gatemesh', ...lineFlags(t, s), `${s.line}=${value}`]
}

/** Run a tool to completion: its stdout, or its own error message (bounded) as the error. */
export async function runTool (t: GpiodTools, tool: 'gpioget', args: string[], timeoutMs = 10_000): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(t.path(tool), args, { env: toolEnv(), timeout: timeoutMs, maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
      if (err != null) reject(new Error(firstLine(stderr) ?? err.message))
      else resolve(stdout)
    })
  })
}

/** A long-running tool (gpiomon, gpioset) with its stderr kept, bounded, for the error when it exits. */
export function startTool (t: GpiodTools, tool: 'gpiomon' | 'gpioset', args: string[]): { child: ChildProcess, stderr: () => string } {
  const child = spawn(t.path(tool), args, { env: toolEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (d: string) => { if (err.length < 4096) err += d })
  // spawn errors (ENOENT after the tools were removed) surface through 'exit' handling; never as an uncaught error
  child.on('error', e => { if (err.length < 4096) err += e.message })
  return { child, stderr: () => firstLine(err) ?? '' }
}

/** SIGTERM, then SIGKILL if it has not exited within `graceMs`; resolves once it is gone. */
export async function stopTool (child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode != null || child.signalCode != null || child.pid == null) return
  const gone = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
  await gone
  clearTimeout(timer)
}

function firstLine (text: string): string | undefined {
  const line = text.split('\n').map(l => l.trim()).find(l => l !== '')
  return line == null ? undefined : line.slice(0, 300)
}
