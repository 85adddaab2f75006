import { fork, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { resolveOnnxBackend } from '../models/onnx-probe.ts'
import { ModelCheckLimitError, ModelLoadError } from './errors.ts'
import type { ModelFormat, TensorSpec } from '../manifest.ts'
import type { OnnxBackendPreference } from '../models/runner.ts'

/** What the checking process is asked. */
export interface CheckRequest {
  format: ModelFormat
  /** absolute path of the model entry */
  path: string
  onnxBackend: OnnxBackendPreference
}

export type CheckResult =
  | { ok: true, inputs: TensorSpec[], outputs: TensorSpec[], backend: string }
  | { ok: false, code: string, message: string }

export interface ModelCheckLimits {
  /** resident memory of the checking process — heap, ArrayBuffers and wasm memory together — in MiB. @default DEFAULT_CHECK_MAX_RSS_MB */
  maxRssMb?: number
  /** wall-clock time for loading and one run on zeros. @default DEFAULT_CHECK_TIMEOUT_MS */
  timeoutMs?: number
  /** checks run at once in this process; more wait their turn. @default 1 */
  concurrency?: number
  /** @default 'auto' */
  onnxBackend?: OnnxBackendPreference
}

export const DEFAULT_CHECK_MAX_RSS_MB = 1024
export const DEFAULT_CHECK_TIMEOUT_MS = 120_000
/** how often the checking process's resident memory is read */
const WATCH_INTERVAL_MS = 20

// the app bundle (packaging/app-bundle.ts) ships the child as a file of its own beside its entry
declare const GATEMESH_BUNDLED_MODEL_CHECK: string | undefined
const CHILD = typeof GATEMESH_BUNDLED_MODEL_CHECK === 'string'
  ? join(dirname(process.argv[1] ?? '.'), GATEMESH_BUNDLED_MODEL_CHECK)
  : fileURLToPath(new URL('./model-check-child.ts', import.meta.url))

let running = 0
const queue: Array<() => void> = []

async function turn (concurrency: number): Promise<() => void> {
  if (running >= concurrency) await new Promise<void>(resolve => { queue.push(resolve) })
  running++
  return () => {
    running--
    queue.shift()?.()
  }
}

/** Resident set of a process in bytes, from /proc (undefined where there is none, or it is gone). */
async function rssOf (pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]
    return kb == null ? undefined : Number(kb) * 1024
  } catch {
    return undefined
  }
}

/**
 * Load the model with the runtime of its format, run it once on zeros, and
 * report the inputs and outputs it declares (names, dtypes, shapes, output
 * shapes a graph does not declare filled in from the run). Proves the model
 * loads and executes before anything is signed.
 *
 * A model is input from a user, and a few hundred bytes of it can ask a
 * runtime for gigabytes (an UpSampling2D of a huge factor) or for minutes.
 * So the check runs in a child process of its own, never in the caller: its
 * V8 heap is capped, and since ArrayBuffers and WebAssembly memory live
 * outside that cap, a watchdog reads its resident memory every few
 * milliseconds and kills it past `maxRssMb`, as it does past `timeoutMs`.
 * When the child dies, every byte it took goes back to the system; the
 * caller never held any of it. Checks run one at a time by default.
 */
export async function checkModel (format: ModelFormat, path: string, limits: ModelCheckLimits = {}): Promise<{ inputs: TensorSpec[], outputs: TensorSpec[], backend: string }> {
  const maxRssMb = limits.maxRssMb ?? DEFAULT_CHECK_MAX_RSS_MB
  const timeoutMs = limits.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS
  const entry = path.split('/').pop() ?? path
  const release = await turn(limits.concurrency ?? 1)
  // never let the child import a native binding that crashes here (an emulator): ask a probe first
  const onnxBackend = format === 'onnx' ? await resolveOnnxBackend(limits.onnxBackend ?? 'auto') : 'wasm'
  let child: ChildProcess | undefined
  let watch: NodeJS.Timeout | undefined
  let timer: NodeJS.Timeout | undefined
  try {
    const result = await new Promise<CheckResult>((resolve, reject) => {
      child = fork(CHILD, [], {
        execArgv: [`--max-old-space-size=${Math.max(64, Math.floor(maxRssMb * 0.75))}`, '--max-semi-space-size=4'],
        stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
        serialization: 'advanced',
        env: { ...process.env, NODE_OPTIONS: '' }
      })
      const c = child
      let verdict: Error | undefined
      const kill = (err: Error): void => {
        verdict ??= err
        c.kill('SIGKILL')
      }
      timer = setTimeout(() => { kill(new ModelCheckLimitError(`${entry}: the ${format} model did not load and run within ${timeoutMs} ms; refused`, { entry })) }, timeoutMs)
      let peak = 0
      watch = setInterval(() => {
        void rssOf(c.pid!).then(rss => {
          if (rss == null) return
          peak = Math.max(peak, rss)
          if (rss > maxRssMb * 1024 * 1024) kill(new ModelCheckLimitError(`${entry}: loading and running the ${format} model took more than ${maxRssMb} MiB of memory; refused`, { entry }))
        })
      }, WATCH_INTERVAL_MS)
      c.once('message', (msg: CheckResult) => { resolve(msg) })
      c.once('error', err => { reject(new ModelLoadError(`${entry}: could not start the model check: ${err.message}`, { cause: err, entry })) })
      c.once('exit', (code, signal) => {
        if (verdict != null) reject(verdict)
        // a V8 heap past its cap aborts the process
        else reject(new ModelCheckLimitError(`${entry}: the model check ended (${signal ?? `exit ${String(code)}`}) before answering, out of memory at ${Math.round(peak / 1024 / 1024)} MiB or crashed in the ${format} runtime; refused`, { entry }))
      })
      c.send({ format, path, onnxBackend } satisfies CheckRequest)
    })
    if (!result.ok) throw new ModelLoadError(`${entry}: ${result.message}`, { entry })
    return { inputs: result.inputs, outputs: result.outputs, backend: result.backend }
  } finally {
    clearInterval(watch)
    clearTimeout(timer)
    if (child != null && child.exitCode == null && child.signalCode == null) {
      const c = child
      const gone = new Promise(resolve => c.once('exit', resolve))
      c.kill('SIGKILL')
      await gone
    }
    release()
  }
}
