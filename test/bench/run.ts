/**
 * Benchmark dispatcher: `npm run bench -- <scenario> [--flag value ...]`.
 * Each scenario module exports `run(args)` returning one result object,
 * printed as JSON on the last line of output.
 */

export type BenchArgs = Record<string, string | boolean | undefined>

const SCENARIOS: Record<string, () => Promise<{ run: (args: BenchArgs) => Promise<Record<string, unknown>> }>> = {
  mesh: async () => await import('./mesh.ts'),
  bundle: async () => await import('./bundle.ts')
}

const [scenario, ...rest] = process.argv.slice(2)
const load = scenario == null ? undefined : SCENARIOS[scenario]
if (load == null) {
  console.error(`usage: npm run bench -- <${Object.keys(SCENARIOS).join('|')}> [--flag value ...]`)
  process.exit(2)
}
// `--flag value`, `--flag=value` and bare `--flag` (true); parseArgs without a
// declared schema would read `--size-mb 64` as a boolean and a stray positional
const values: BenchArgs = {}
for (let i = 0; i < rest.length; i++) {
  const arg = rest[i]!
  if (!arg.startsWith('--')) continue
  const eq = arg.indexOf('=')
  if (eq > 0) values[arg.slice(2, eq)] = arg.slice(eq + 1)
  else if (rest[i + 1] != null && !rest[i + 1]!.startsWith('--')) values[arg.slice(2)] = rest[++i]
  else values[arg.slice(2)] = true
}
const result = await (await load()).run(values)
console.log(JSON.stringify(result))
process.exit(0)
