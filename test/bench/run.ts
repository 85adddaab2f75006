/**
 * Benchmark dispatcher: `npm run bench -- <scenario> [--flag value ...]`.
 * Each scenario module exports `run(args)` returning one result object,
 * printed as JSON on the last line of output. Scenarios start every process
 * through test/helpers/processes.ts: whatever they leave running is stopped
 * here, and killed on any other way out (error, Ctrl-C, kill).
 */
import { running, stopAll } from '../helpers/processes.ts'

export type BenchArgs = Record<string, string | boolean | undefined>

const SCENARIOS: Record<string, () => Promise<{ run: (args: BenchArgs) => Promise<Record<string, unknown>> }>> = {
  mesh: async () => await import('./mesh.ts'),
  failover: async () => await import('./failover.ts'),
  inference: async () => await import('./inference.ts'),
  bundle: async () => await import('./bundle.ts'),
  coordinator: async () => await import('./coordinator.ts'),
  image: async () => await import('./image.ts'),
  revocation: async () => await import('./revocation.ts'),
  script: async () => await import('./script.ts'),
  scale: async () => await import('./scale.ts'),
  'versus-serf': async () => await import('./scale-serf.ts'),
  rollout: async () => await import('./rollout.ts')
}

/** `--name value` → string, a bare `--name` → true. */
function parseFlags (argv: string[]): BenchArgs {
  const flags: BenchArgs = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith('--')) throw new Error(`unexpected argument "${arg}"`)
    const next = argv[i + 1]
    if (next != null && !next.startsWith('--')) {
      flags[arg.slice(2)] = next
      i++
    } else {
      flags[arg.slice(2)] = true
    }
  }
  return flags
}

const [scenario, ...rest] = process.argv.slice(2)
const load = scenario == null ? undefined : SCENARIOS[scenario]
if (load == null) {
  console.error(`usage: npm run bench -- <${Object.keys(SCENARIOS).join('|')}> [--flag value ...]`)
  process.exit(2)
}
let result: Record<string, unknown>
try {
  result = await (await load()).run(parseFlags(rest))
} finally {
  const left = running()
  if (left.length > 0) console.error(`[bench] stopping what the scenario left running: ${left.map(p => p.name).join(', ')}`)
  await stopAll()
}
console.log(JSON.stringify(result))
process.exit(0)
