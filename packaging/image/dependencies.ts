import { builtinModules } from 'node:module'
import { cp, readdir, readFile, stat } from 'node:fs/promises'
import { basename, dirname, join, relative, sep } from 'node:path'
import { ImageError } from './errors.ts'

/** A package of the production dependency tree, found in an installed `node_modules`. */
export interface InstalledPackage {
  name: string
  version: string
  /** absolute directory of the installed package */
  dir: string
  /** path below `node_modules`, e.g. `classic-level` or `abstract-level/node_modules/buffer` */
  rel: string
  manifest: PackageManifest
}

export interface PackageManifest {
  name?: string
  version?: string
  cpu?: string[]
  os?: string[]
  gypfile?: boolean
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  peerDependenciesMeta?: Record<string, { optional?: boolean }>
}

/** `@scope/name/sub/path` → `@scope/name`; `name/sub` → `name`; builtins → undefined. */
export function packageNameOf (specifier: string): string | undefined {
  if (specifier.startsWith('node:') || specifier.startsWith('.') || specifier.startsWith('/')) return undefined
  const parts = specifier.split('/')
  const name = specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!
  if (builtinModules.includes(name)) return undefined
  return name
}

async function readManifest (dir: string): Promise<PackageManifest | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as PackageManifest
  } catch (err: any) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined
    throw new ImageError(`cannot read ${join(dir, 'package.json')}: ${err.message}`, { cause: err })
  }
}

/**
 * Node's lookup: `<ancestor>/node_modules/<name>` for each ancestor of
 * `fromDir` up to `root`, skipping ancestors that are themselves
 * `node_modules` folders.
 */
async function resolveInstalled (name: string, fromDir: string, root: string): Promise<string | undefined> {
  let dir = fromDir
  for (;;) {
    if (basename(dir) !== 'node_modules') {
      const candidate = join(dir, 'node_modules', name)
      if (await readManifest(candidate) != null) return candidate
    }
    if (dir === root) return undefined
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

export interface CollectInit {
  /** the project directory holding `node_modules` */
  root: string
  /** packages the app imports at run time */
  roots: string[]
  /** roots the app can run without (imports guarded by try/catch): collected only when installed */
  optionalRoots?: string[]
  /** package name → why it is left out; neither it nor what only it needs is collected */
  omit?: Record<string, string>
}

export interface Collected {
  packages: InstalledPackage[]
  /** omitted packages that something asked for */
  omitted: Array<{ name: string, reason: string }>
}

/**
 * The production dependency closure of `roots` as installed under
 * `root/node_modules`: dependencies, optional dependencies that are
 * installed, and installed peer dependencies. Each package keeps its
 * place in the tree, so copying them to the same relative paths keeps
 * Node's resolution the same.
 */
export async function collectPackages (init: CollectInit): Promise<Collected> {
  const omit = init.omit ?? {}
  const byDir = new Map<string, InstalledPackage>()
  const omitted = new Map<string, string>()
  const queue: Array<{ name: string, from: string, optional: boolean, by: string }> =
    [...init.roots.map(name => ({ name, from: init.root, optional: false, by: 'the app' })),
      ...(init.optionalRoots ?? []).map(name => ({ name, from: init.root, optional: true, by: 'the app' }))]
  while (queue.length > 0) {
    const { name, from, optional, by } = queue.shift()!
    // declaration-only packages that some libraries list as dependencies: nothing runs them
    if (name.startsWith('@types/')) continue
    if (omit[name] != null) {
      omitted.set(name, omit[name])
      continue
    }
    const dir = await resolveInstalled(name, from, init.root)
    if (dir == null) {
      if (optional) continue
      throw new ImageError(`${name} (needed by ${by}) is not installed under ${join(init.root, 'node_modules')}; run npm ci`)
    }
    if (byDir.has(dir)) continue
    const manifest = (await readManifest(dir))!
    byDir.set(dir, {
      name,
      version: manifest.version ?? '0.0.0',
      dir,
      rel: relative(join(init.root, 'node_modules'), dir).split(sep).join('/'),
      manifest
    })
    for (const dep of Object.keys(manifest.dependencies ?? {})) {
      queue.push({ name: dep, from: dir, optional: manifest.optionalDependencies?.[dep] != null, by: name })
    }
    for (const dep of Object.keys(manifest.optionalDependencies ?? {})) queue.push({ name: dep, from: dir, optional: true, by: name })
    for (const dep of Object.keys(manifest.peerDependencies ?? {})) queue.push({ name: dep, from: dir, optional: true, by: name })
  }
  const packages = [...byDir.values()].sort((a, b) => a.rel.localeCompare(b.rel))
  return { packages, omitted: [...omitted].map(([name, reason]) => ({ name, reason })) }
}

/** Top-level folders of a package that no running program reads. */
const PRUNED_DIRS = new Set(['test', 'tests', '__tests__', '.github', 'example', 'examples', 'docs', 'doc', 'coverage', 'benchmark', 'benchmarks', '.nyc_output'])
/** Files no running program reads: source maps, type declarations, prose (licences stay). */
const PRUNED_FILE = /\.(map|d\.ts|d\.mts|d\.cts|md|markdown)$/i
const LICENCE_FILE = /^(licen[cs]e|copying|notice)/i

/**
 * Copy one package into `<destNodeModules>/<rel>`, leaving out its nested
 * `node_modules` (those packages are copied on their own, if needed) and
 * files that only serve development.
 */
export async function copyPackage (pkg: InstalledPackage, destNodeModules: string): Promise<void> {
  const dest = join(destNodeModules, pkg.rel)
  await cp(pkg.dir, dest, {
    recursive: true,
    // the tree may be a pnpm-style link farm; the image gets real files
    dereference: true,
    filter: src => {
      const inside = relative(pkg.dir, src)
      if (inside === '') return true
      const parts = inside.split(sep)
      if (parts[0] === 'node_modules') return false
      if (parts.length === 1 && PRUNED_DIRS.has(parts[0]!)) return false
      const file = parts[parts.length - 1]!
      return !(PRUNED_FILE.test(file) && !LICENCE_FILE.test(file))
    }
  })
}

export async function dirBytes (dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  }
  return total
}
