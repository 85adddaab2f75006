import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runScript } from '../../node/actions/script.ts'
import { Sandbox } from '../../node/actions/sandbox/sandbox.ts'
import { median, percentile, round } from './stats.ts'
import type { IsolationMode } from '../../node/actions/sandbox/probe.ts'
import type { BenchArgs } from './run.ts'

/**
 * What the sandbox costs an action script: wall time per run, from queueing
 * the run to its exit, for a script that reads its event, writes one file
 * and prints one line — in each isolation mode this machine offers (`none`
 * is Node's permission model alone, what scripts had before the sandbox).
 * `--runs N` (default 20) per mode, one after another.
 */
export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const runs = Number(args.runs ?? 20)
  const root = await mkdtemp(join(tmpdir(), 'gatemesh-bench-script-'))
  const quiet = { info: () => {}, warn: () => {}, error: () => {} }
  try {
    const bundle = join(root, 'bundle')
    await mkdir(bundle, { mode: 0o755 })
    await writeFile(join(bundle, 'action.js'), `
let input = ''
process.stdin.on('data', d => { input += d })
process.stdin.on('end', () => { require('node:fs').writeFileSync('last.json', input); console.log('ok') })
`, { mode: 0o644 })
    const modes: IsolationMode[] = process.getuid?.() === 0 ? ['user', 'userns', 'none'] : ['userns', 'none']
    const result: Record<string, unknown> = { scenario: 'script', runs }
    for (const mode of modes) {
      const sandbox = await Sandbox.create({ mode, runDir: join(root, `runs-${mode}`) }, quiet)
      if (sandbox.isolation.mode !== mode) {
        result[mode] = { unavailable: sandbox.isolation.missing }
        continue
      }
      const ms: number[] = []
      for (let i = 0; i < runs; i++) {
        const started = process.hrtime.bigint()
        await runScript({ path: join(bundle, 'action.js'), scratch: join(root, `scratch-${mode}`), input: { i }, logger: quiet, sandbox })
        ms.push(Number(process.hrtime.bigint() - started) / 1e6)
      }
      result[mode] = { medianMs: round(median(ms)), p95Ms: round(percentile(ms, 95)) }
    }
    return result
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}
