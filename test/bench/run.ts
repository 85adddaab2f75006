/**
 * Benchmark dispatcher: `npm run bench -- <scenario> [--flag value ...]`.
 * Each scenario module exports `run(args)` returning one result object,
 * printed as JSON on the last line of output.
 */
import { parseArgs } from 'node:util'

export type BenchArgs = Record<string, string | boolean | undefined>

const SCENARIOS: Record<string, () => Promise<{ run: (args: BenchArgs) => Promise<Record<string, unknown>> }>> = {
  mesh: async () => await import('./mesh.ts'),
  inference: async () => await import('./inference.ts')
}

const [scenario, ...rest] = process.argv.slice(2)
const load = scenario == null ? undefined : SCENARIOS[scenario]
if (load == null) {
  console.error(`usage: npm run bench -- <${Object.keys(SCENARIOS).join('|')}> [--flag value ...]`)
  process.exit(2)
}
const { values } = parseArgs({ args: rest, strict: false })
const result = await (await load()).run(values as BenchArgs)
console.log(JSON.stringify(result))
process.exit(0)
