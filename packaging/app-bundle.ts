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
  file: string
  bytes: number
  /** bare specifiers the bundle imports at run time (the externals it really uses), e.g. `classic-level` */
  externalImports: string[]
}

/**
 * Bundle the gatemesh CLI (agent included) into one ES module with esbuild.
 * Type stripping and thousands of small module files cost an agent ~80 MB
 * of resident memory when run from sources; one minified file does not.
 */
/** The inference worker's file beside the bundle; node/runtime/pool.ts finds it through GATEMESH_WORKER_FILE. */
export const WORKER_BUNDLE_FILE = 'inference-worker.mjs'

export async function buildAppBundle (outFile = join(REPO_ROOT, 'dist', 'gatemesh.mjs')): Promise<AppBundleResult> {
  const esbuild = await import('esbuild')
  await mkdir(dirname(outFile), { recursive: true })
  const common = {
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    minify: true,
    legalComments: 'none',
    external: BUNDLE_EXTERNALS,
    metafile: true,
    logLevel: 'silent',
    // worker threads are separate module graphs: the pool loads this file instead of worker.ts
    define: { GATEMESH_WORKER_FILE: JSON.stringify(`./${WORKER_BUNDLE_FILE}`) },
    // CommonJS dependencies inside an ES module bundle still call require()
    banner: { js: "import { createRequire as __gmCreateRequire } from 'node:module'; const require = __gmCreateRequire(import.meta.url);" }
  } as const
  const results = await Promise.all([
    esbuild.build({
      ...common,
      stdin: {
        contents: "import { main } from './node/cli/main.ts'\nprocess.exitCode = await main(process.argv.slice(2))\n",
        resolveDir: REPO_ROOT,
        sourcefile: 'gatemesh-entry.ts',
        loader: 'ts'
      },
      outfile: outFile
    }),
    esbuild.build({ ...common, entryPoints: [join(REPO_ROOT, 'node', 'runtime', 'worker.ts')], outfile: join(dirname(outFile), WORKER_BUNDLE_FILE) })
  ])
  const outputs = results.flatMap(r => Object.values(r.metafile.outputs))
  const bytes = outputs.reduce((sum, o) => sum + o.bytes, 0)
  const externalImports = [...new Set(outputs.flatMap(o => o.imports.filter(i => i.external).map(i => i.path)))].sort()
  return { file: outFile, bytes, externalImports }
}
