import { spawn } from 'node:child_process'
import { randomInt } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

/**
 * `npm run fuzz -- --runs N --seed S [--only codecs,agent-api,coordinator-api]`:
 * the fuzz suite with more runs per property than `npm test` uses, one
 * seed for the whole run (random unless given), printed first so a failure
 * replays with the same command. Each file runs in its own process.
 */
const FILES = ['codecs', 'agent-api', 'coordinator-api']

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '500' },
    seed: { type: 'string' },
    only: { type: 'string' }
  }
})
const runs = Number(values.runs)
const seed = values.seed == null ? randomInt(2 ** 31) : Number(values.seed)
if (!Number.isSafeInteger(runs) || runs < 1) throw new Error(`--runs ${values.runs}: a positive integer, please`)
if (!Number.isSafeInteger(seed)) throw new Error(`--seed ${values.seed}: an integer, please`)
const files = values.only == null ? FILES : values.only.split(',')
for (const f of files) if (!FILES.includes(f)) throw new Error(`--only ${f}: one of ${FILES.join(', ')}`)

console.log(`fuzz: seed ${seed}, ${runs} runs per property; replay: npm run fuzz -- --runs ${runs} --seed ${seed}${values.only == null ? '' : ` --only ${values.only}`}`)
const failed: string[] = []
for (const f of files) {
  const file = fileURLToPath(new URL(`./${f}.test.ts`, import.meta.url))
  const code = await new Promise<number>(resolve => {
    const child = spawn(process.execPath, [file], { stdio: 'inherit', env: { ...process.env, GATEMESH_FUZZ_SEED: String(seed), GATEMESH_FUZZ_RUNS: String(runs), TAP_TIMEOUT: '0' } })
    const forward = (signal: NodeJS.Signals): void => { child.kill(signal) }
    process.once('SIGINT', forward)
    process.once('SIGTERM', forward)
    child.on('exit', (c, signal) => {
      process.off('SIGINT', forward)
      process.off('SIGTERM', forward)
      resolve(c ?? (signal == null ? 1 : 128))
    })
  })
  if (code !== 0) failed.push(f)
}
console.log(JSON.stringify({ seed, runs, files, failed }))
process.exitCode = failed.length === 0 ? 0 : 1
