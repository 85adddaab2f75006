import { cp, mkdir, readdir, readFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
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
  '@gatemesh/malloc-trim',
  '@tensorflow/*',
  'onnxruntime-node',
  'onnxruntime-web',
  'onnxruntime-common',
  '@litertjs/*',
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
  /** every file written: the entry, the inference worker and model-check child beside it, the shared chunks and the .proto files */
  files: string[]
  bytes: number
  /** bare specifiers the bundle imports at run time (the externals it really uses), e.g. `classic-level` */
  externalImports: string[]
}

/** File name of the inference worker next to the bundle. */
export const WORKER_FILE = 'gatemesh-worker.mjs'
/** File name of the model-check child process next to the bundle. */
export const MODEL_CHECK_FILE = 'gatemesh-model-check.mjs'
/** Folder of TensorFlow Serving's .proto files next to the bundle (the gRPC API reads them at start). */
export const PROTOS_DIR = 'protos'

/**
 * Bundle the gatemesh CLI (agent included) into one ES module with esbuild.
 * Type stripping and thousands of small module files cost an agent ~80 MB
 * of resident memory when run from sources; one minified file does not.
 * `version` is what the bundle reports (a release's own version).
 */
export async function buildAppBundle (outFile = join(REPO_ROOT, 'dist', 'gatemesh.mjs'), options: { version?: string } = {}): Promise<AppBundleResult> {
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
  const outDir = dirname(outFile)
  // split at the CLI's dynamic imports: `gatemesh agent` loads only the agent's
  // code, not the coordinator, image builder or bundle CLI beside it
  const result = await esbuild.build({
    ...common,
    entryPoints: [
      { in: join(REPO_ROOT, 'node', 'cli', 'entry.ts'), out: basename(outFile, '.mjs') },
      { in: join(REPO_ROOT, 'node', 'runtime', 'worker.ts'), out: basename(WORKER_FILE, '.mjs') },
      { in: join(REPO_ROOT, 'packaging', 'bundle', 'model-check-child.ts'), out: basename(MODEL_CHECK_FILE, '.mjs') }
    ],
    splitting: true,
    outdir: outDir,
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
    define: { GATEMESH_BUNDLED_WORKER: JSON.stringify(WORKER_FILE), GATEMESH_BUNDLED_MODEL_CHECK: JSON.stringify(MODEL_CHECK_FILE), GATEMESH_BUNDLED_PROTOS: JSON.stringify(PROTOS_DIR), GATEMESH_VERSION: JSON.stringify(options.version ?? JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')).version) }
  })
  await cp(join(REPO_ROOT, 'protocols', 'tf-serving', 'protos'), join(outDir, PROTOS_DIR), { recursive: true })
  const protos = (await readdir(join(outDir, PROTOS_DIR), { recursive: true, withFileTypes: true })).filter(e => e.isFile()).map(e => join(e.parentPath, e.name))
  const outputs = Object.values(result.metafile?.outputs ?? {})
  const bytes = outputs.reduce((sum, o) => sum + o.bytes, 0)
  const externalImports = [...new Set(outputs.flatMap(o => o.imports.filter(i => i.external).map(i => i.path)))].sort()
  const files = [...Object.keys(result.metafile?.outputs ?? {}).map(f => resolve(REPO_ROOT, f)), ...protos]
  return { file: outFile, files, bytes, externalImports }
}
