/**
 * Benchmark dispatcher: `npm run bench -- <scenario> [--flag value ...]`.
 * Each scenario module exports `run(args)` returning one result object,
 * printed as JSON on the last line of output.
 */
export type BenchArgs = Record<string, string | boolean | undefined>

const SCENARIOS: Record<string, () => Promise<{ run: (args: BenchArgs) => Promise<Record<string, unknown>> }>> = {
  mesh: async () => await import('./mesh.ts'),
  failover: async () => await import('./failover.ts'),
  inference: async () => await import('./inference.ts'),
  bundle: async () => await import('./bundle.ts'),
  coordinator: async () => await import('./coordinator.ts'),
  image: async () => await import('./image.ts'),
  revocation: async () => await import('./revocation.ts')
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
const result = await (await load()).run(parseFlags(rest))
console.log(JSON.stringify(result))
process.exit(0)
