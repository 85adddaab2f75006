import { readdir, rm, stat } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { describeElf, ELF_MACHINE, readElfHeader, type Arch } from './arch.ts'
import { BUILT_FROM_SOURCE, compileFromSource, type Toolchain } from './compile.ts'
import { NoPrebuildError, WrongArchitectureError } from './errors.ts'
import { MODEL_RUNTIME_LAYOUTS } from './model-runtimes.ts'
import type { InstalledPackage } from './dependencies.ts'

/** Native packages deliberately left out of images (none today: `epoll` is compiled for the image, see compile.ts). */
export const OMITTED_FROM_IMAGES: Record<string, string> = {}

/** Packages the CLI imports only to build images or run browser tests; devices never need them. */
export const TOOLING_ONLY = ['esbuild', 'playwright-core']

export interface NativeModule {
  package: string
  version: string
  /** the `.node` files kept, relative to the image's node_modules */
  binaries: string[]
  /** `prebuilt`: shipped by the package; `compiled`: built from source for the image by compile.ts */
  origin: 'prebuilt' | 'compiled'
}

/** Leftovers of building from source that a prebuilt package never reads at run time. */
const SOURCE_FILE = /\.(c|cc|cpp|cxx|h|hh|hpp|gyp|gypi)$/i
const BUILD_DIRS = ['build', 'deps']

async function isDir (path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory()
  } catch {
    return false
  }
}

async function filesUnder (dir: string): Promise<string[]> {
  if (!await isDir(dir)) return []
  const entries = await readdir(dir, { withFileTypes: true, recursive: true })
  return entries.filter(e => e.isFile()).map(e => join(e.parentPath, e.name))
}

/** A package with native code: a node-gyp project, prebuilds, or `.node` files of its own. */
async function isNative (pkg: InstalledPackage, dir: string): Promise<boolean> {
  if (pkg.manifest.gypfile === true) return true
  if (await isDir(join(dir, 'prebuilds'))) return true
  const files = await filesUnder(dir)
  return files.some(f => f.endsWith('.node') || f.endsWith(`${sep}binding.gyp`))
}

/**
 * prebuildify names: `<name>[.<tag>...].node` with tags such as `napi`,
 * `glibc`, `musl`, `armv8`. The official Node builds link against glibc,
 * so musl builds can never load on them.
 */
function loadableOnGlibc (file: string): boolean {
  return !file.split('.').includes('musl')
}

/**
 * Make the copied packages in `nodeModules` fit `arch`: compile the
 * packages of BUILT_FROM_SOURCE with `toolchain`; for every other native
 * package keep only `prebuilds/linux-<arch>` (glibc builds), drop other
 * platforms' prebuilds, local `build/` output and C/C++ sources; refuse a
 * package built for another CPU or a native package without a prebuild for
 * `arch`. Finally check that every `.node` file left is an ELF for `arch`.
 */
export async function fitNativeModules (packages: InstalledPackage[], nodeModules: string, arch: Arch, toolchain: () => Promise<Toolchain>): Promise<NativeModule[]> {
  const natives: NativeModule[] = []
  for (const pkg of packages) {
    const dir = join(nodeModules, pkg.rel)
    if (pkg.manifest.cpu != null && !cpuAllows(pkg.manifest.cpu, arch)) {
      throw new NoPrebuildError(pkg.name, `${pkg.name}@${pkg.version} is a package for cpu ${pkg.manifest.cpu.join(',')}, not ${arch}: install dependencies on an ${arch} machine or add the ${arch} variant`)
    }
    const fromSource = BUILT_FROM_SOURCE[pkg.name]
    if (fromSource != null) {
      const binary = await compileFromSource(pkg.name, dir, fromSource.binary, await toolchain(), nodeModules)
      for (const file of await filesUnder(dir)) {
        if (SOURCE_FILE.test(file)) await rm(file, { force: true })
      }
      natives.push({ package: pkg.name, version: pkg.version, binaries: [binary], origin: 'compiled' })
      continue
    }
    if (!await isNative(pkg, dir)) continue
    // the model runtimes keep their binaries in layouts of their own (fitModelRuntimes); checkBinaries below still checks them
    if (MODEL_RUNTIME_LAYOUTS[pkg.name] != null) continue
    const prebuilds = join(dir, 'prebuilds')
    const platform = `linux-${arch}`
    if (!await isDir(prebuilds)) {
      throw new NoPrebuildError(pkg.name, `${pkg.name}@${pkg.version} is a native module without prebuilt binaries; it cannot be built for ${arch} here (leave it out of the image's dependencies, or use a version that ships prebuilds/${platform})`)
    }
    const wanted = (await filesUnder(join(prebuilds, platform))).filter(f => f.endsWith('.node') && loadableOnGlibc(f))
    if (wanted.length === 0) {
      throw new NoPrebuildError(pkg.name, `${pkg.name}@${pkg.version} has no prebuilt binary for ${platform} (glibc) in prebuilds/`)
    }
    for (const entry of await readdir(prebuilds)) {
      if (entry !== platform) await rm(join(prebuilds, entry), { recursive: true, force: true })
    }
    for (const file of await filesUnder(join(prebuilds, platform))) {
      if (!wanted.includes(file)) await rm(file, { force: true })
    }
    // node-gyp-build prefers build/Release over prebuilds: a host build must not shadow the target's binary
    for (const d of BUILD_DIRS) await rm(join(dir, d), { recursive: true, force: true })
    for (const file of await filesUnder(dir)) {
      if (SOURCE_FILE.test(file)) await rm(file, { force: true })
    }
    natives.push({ package: pkg.name, version: pkg.version, binaries: wanted.map(f => relative(nodeModules, f).split(sep).join('/')), origin: 'prebuilt' })
  }
  await checkBinaries(nodeModules, arch)
  return natives
}

/** npm's `cpu` field: names allow, `!name` forbids. */
function cpuAllows (cpu: string[], arch: Arch): boolean {
  if (cpu.includes(`!${arch}`)) return false
  const allowed = cpu.filter(c => !c.startsWith('!'))
  return allowed.length === 0 || allowed.includes(arch)
}

/** Every `.node` file under `dir` must be an ELF for `arch`. */
export async function checkBinaries (dir: string, arch: Arch): Promise<string[]> {
  const binaries = (await filesUnder(dir)).filter(f => f.endsWith('.node'))
  for (const file of binaries) {
    const elf = await readElfHeader(file)
    if (elf?.machine !== ELF_MACHINE[arch] || elf.bits !== 64) {
      throw new WrongArchitectureError(file, `${relative(dir, file)} is ${describeElf(elf)}, not an ${arch} binary`)
    }
  }
  return binaries
}
