import { mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Repository root, where package.json and node_modules live. */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')

/**
 * Packages left out of the bundle: native addons and modules that locate
 * files (prebuilds, .wasm) relative to their own directory.
 */
export const BUNDLE_EXTERNALS = [
  'classic-level',
  '@serialport/*',
  'serialport',
  'onoff',
  'epoll',
  '@tensorflow/*',
  'playwright-core',
  'esbuild'
]

/**
 * Node flags the agent runs with in images and benchmarks. On a 20-node
 * mesh a 1 MiB young generation saves ~8 MB of resident memory per agent
 * and V8's optimize-for-size ~9 MB more, for a little GC and JIT time.
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=1', '--optimize-for-size']

export interface AppBundleResult {
  /** the entry: `node FILE agent --data DIR` */
  file: string
  /** every file written: the entry and the inference worker beside it */
  files: string[]
  bytes: number
  /** bare specifiers the bundle imports at run time (the externals it really uses), e.g. `classic-level` */
  externalImports: string[]
}

/** File name of the inference worker next to the bundle. */
export const WORKER_FILE = 'gatemesh-worker.mjs'

/**
 * Bundle the gatemesh CLI (agent included) into one ES module with esbuild.
 * Type stripping and thousands of small module files cost an agent ~80 MB
 * of resident memory when run from sources; one minified file does not.
 */
export async function buildAppBundle (outFile = join(REPO_ROOT, 'dist', 'gatemesh.mjs')): Promise<AppBundleResult> {
  const esbuild = await import('esbuild')
  await mkdir(dirname(outFile), { recursive: true })
  const common = {
    bundle: true,
    platform: 'node' as const,
    format: 'esm' as const,
    target: 'node22',
    minify: true,
    legalComments: 'none' as const,
    external: BUNDLE_EXTERNALS,
    metafile: true,
    logLevel: 'silent' as const,
    // CommonJS dependencies inside an ES module bundle still call require()
    banner: { js: "import { createRequire as __gmCreateRequire } from 'node:module'; const require = __gmCreateRequire(import.meta.url);" }
  }
  const workerFile = join(dirname(outFile), WORKER_FILE)
  const worker = await esbuild.build({ ...common, entryPoints: [join(REPO_ROOT, 'node', 'runtime', 'worker.ts')], outfile: workerFile })
  const result = await esbuild.build({
    ...common,
    define: { GATEMESH_BUNDLED_WORKER: JSON.stringify(`./${WORKER_FILE}`) },
    stdin: {
      contents: "import { main } from './node/cli/main.ts'\nprocess.exitCode = await main(process.argv.slice(2))\n",
      resolveDir: REPO_ROOT,
      sourcefile: 'gatemesh-entry.ts',
      loader: 'ts'
    },
    outfile: outFile
  })
  const outputs = [result, worker].flatMap(r => Object.values(r.metafile?.outputs ?? {}))
  const bytes = outputs.reduce((sum, o) => sum + o.bytes, 0)
  const externalImports = [...new Set(outputs.flatMap(o => o.imports.filter(i => i.external).map(i => i.path)))].sort()
  return { file: outFile, files: [outFile, workerFile], bytes, externalImports }
}
