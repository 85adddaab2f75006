import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { AGENT_NODE_FLAGS, buildAppBundle, REPO_ROOT } from '../../packaging/app-bundle.ts'
import { AGENT_ENVIRONMENT } from '../../packaging/image/layout.ts'

/** Where test bundles are kept, one directory per source hash (under the repository, so the externals resolve from node_modules). */
export const TEST_BUNDLES = join(REPO_ROOT, 'dist', 'test')
/** What goes into the bundle: a change to any of it means a new build. */
const SOURCES = ['bin', 'node', 'protocols', 'sensors', 'packaging', 'coordinator', 'patches', 'package.json', 'package-lock.json']
const COMPLETE = '.complete'
/** Bundles of older sources are removed once unused this long (another run may still use a recent one). */
const PRUNE_AFTER_MS = 6 * 3600_000

/** How tests start the shipped app: `exec args... agent --data DIR`, as benchmarks and images do. */
export interface AppCommand {
  exec: string
  args: string[]
  env?: NodeJS.ProcessEnv
}

async function filesUnder (path: string): Promise<string[]> {
  const s = await stat(path).catch(() => null)
  if (s == null) return []
  if (s.isFile()) return [path]
  const entries = await readdir(path, { recursive: true, withFileTypes: true })
  return entries.filter(e => e.isFile() && !e.parentPath.includes('node_modules')).map(e => join(e.parentPath, e.name))
}

/** Hash of every source file the bundle is built from (path and content). */
export async function sourceHash (): Promise<string> {
  const files = (await Promise.all(SOURCES.map(async s => await filesUnder(join(REPO_ROOT, s))))).flat().sort()
  const hash = createHash('sha256')
  for (const f of files) hash.update(relative(REPO_ROOT, f)).update('\0').update(await readFile(f)).update('\0')
  return hash.digest('hex').slice(0, 16)
}

let built: Promise<string> | undefined

/**
 * The app bundle of the sources as they are now, built once and shared: by
 * every test file of a run (keyed on the sources' hash, so parallel test
 * files and later runs reuse it) and by every call in this process. A
 * bundle is built beside its final place and renamed into it, so a reader
 * never sees half a bundle and two builders racing both succeed.
 */
export async function testBundle (): Promise<string> {
  built ??= (async () => {
    const dir = join(TEST_BUNDLES, await sourceHash())
    const entry = join(dir, 'gatemesh.mjs')
    if (await stat(join(dir, COMPLETE)).then(() => true, () => false)) return entry
    await mkdir(TEST_BUNDLES, { recursive: true })
    const tmp = join(TEST_BUNDLES, `.build-${process.pid}-${Date.now()}`)
    try {
      await buildAppBundle(join(tmp, 'gatemesh.mjs'))
      await writeFile(join(tmp, COMPLETE), new Date().toISOString())
      await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        // another process got there first: use its bundle
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err
      })
    } finally {
      await rm(tmp, { recursive: true, force: true })
    }
    await prune(dir)
    return entry
  })()
  return await built
}

async function prune (keep: string): Promise<void> {
  const now = Date.now()
  for (const name of await readdir(TEST_BUNDLES).catch(() => [] as string[])) {
    const dir = join(TEST_BUNDLES, name)
    if (dir === keep) continue
    const s = await stat(dir).catch(() => null)
    if (s != null && now - s.mtimeMs > PRUNE_AFTER_MS) await rm(dir, { recursive: true, force: true }).catch(() => {})
  }
}

/** The agent (or any CLI command) from the test bundle, with the image unit's node flags and environment. */
export async function bundleCommand (): Promise<AppCommand> {
  return { exec: process.execPath, args: [...AGENT_NODE_FLAGS, await testBundle()], env: { ...AGENT_ENVIRONMENT } }
}
