import { readdir, rm, stat } from 'node:fs/promises'
import { join, relative, sep } from 'node:path'
import { describeElf, ELF_MACHINE, readElfHeader, type Arch } from './arch.ts'
import { NoPrebuildError, WrongArchitectureError } from './errors.ts'
import { MODEL_RUNTIME_LAYOUTS } from './model-runtimes.ts'
import type { InstalledPackage } from './dependencies.ts'

/**
 * Native packages deliberately left out of images. onoff's `epoll` is
 * compiled by node-gyp at install time and publishes no prebuilt binaries;
 * it cannot be compiled for another CPU here and would need a compiler on
 * the device. Images ship without GPIO: a GPIO sensor or actuator in an
 * image fails to open with GpioUnavailableError naming the missing driver,
 * and everything else runs.
 */
export const OMITTED_FROM_IMAGES: Record<string, string> = {
  epoll: 'native module without prebuilt binaries (node-gyp builds it on install); GPIO sensors and actuators report GpioUnavailableError in images',
  onoff: 'GPIO driver whose native epoll module has no prebuilt binaries (node-gyp builds it on install); GPIO sensors and actuators report GpioUnavailableError in images'
}

/** Packages the CLI imports only to build images or run browser tests; devices never need them. */
export const TOOLING_ONLY = ['esbuild', 'playwright-core']

export interface NativeModule {
  package: string
  version: string
  /** the `.node` files kept, relative to the image's node_modules */
  binaries: string[]
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
 * Make the copied packages in `nodeModules` fit `arch`: for every native
 * package keep only `prebuilds/linux-<arch>` (glibc builds), drop other
 * platforms' prebuilds, local `build/` output and C/C++ sources; refuse a
 * package built for another CPU or a native package without a prebuild for
 * `arch`. Finally check that every `.node` file left is an ELF for `arch`.
 */
export async function fitNativeModules (packages: InstalledPackage[], nodeModules: string, arch: Arch): Promise<NativeModule[]> {
  const natives: NativeModule[] = []
  for (const pkg of packages) {
    const dir = join(nodeModules, pkg.rel)
    if (pkg.manifest.cpu != null && !cpuAllows(pkg.manifest.cpu, arch)) {
      throw new NoPrebuildError(pkg.name, `${pkg.name}@${pkg.version} is a package for cpu ${pkg.manifest.cpu.join(',')}, not ${arch}: install dependencies on an ${arch} machine or add the ${arch} variant`)
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
    natives.push({ package: pkg.name, version: pkg.version, binaries: wanted.map(f => relative(nodeModules, f).split(sep).join('/')) })
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
