import { execFile } from 'node:child_process'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, relative, sep } from 'node:path'
import { promisify } from 'node:util'
import * as tar from 'tar'
import { REPO_ROOT } from '../app-bundle.ts'
import { describeElf, ELF_MACHINE, readElfHeader, type Arch } from './arch.ts'
import { NativeBuildError } from './errors.ts'
import type { NodeRuntime } from './node-runtime.ts'

const exec = promisify(execFile)

/**
 * Native packages that publish no prebuilt binaries and are compiled from
 * source for the image's CPU, with the binary `bindings` loads them from.
 * onoff's `epoll` is the GPIO sysfs driver's interrupt source; gatemesh's
 * own `@gatemesh/malloc-trim` hands free C heap back to the kernel.
 */
export const BUILT_FROM_SOURCE: Record<string, { binary: string }> = {
  epoll: { binary: 'build/Release/epoll.node' },
  '@gatemesh/malloc-trim': { binary: 'build/Release/malloc_trim.node' }
}

/** GNU triplets of Debian's cross toolchains (`g++-aarch64-linux-gnu`, `g++-x86-64-linux-gnu`). */
const TRIPLET: Record<Arch, string> = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }
/** Debian's package for each cross compiler, for the error that says what to install. */
const CROSS_PACKAGE: Record<Arch, string> = { x64: 'g++-x86-64-linux-gnu', arm64: 'g++-aarch64-linux-gnu' }

export interface Toolchain {
  arch: Arch
  /** the pinned Node's headers for `arch` (`<nodedir>/include/node`), from its npm runtime package */
  nodedir: string
  /** CC, CXX, LINK, AR for node-gyp: the host's compilers, or Debian's cross compilers for another CPU */
  env: Record<string, string>
  /** the C++ compiler, for messages */
  cxx: string
  /** removes the headers */
  dispose: () => Promise<void>
}

/**
 * Get ready to compile native modules for `arch`: unpack the headers that
 * ship inside the runtime's npm package (`include/node`, the same release
 * as the image's Node) and find a compiler that targets `arch`.
 */
export async function prepareToolchain (runtime: NodeRuntime, arch: Arch): Promise<Toolchain> {
  const native = process.arch === arch
  const prefix = native ? '' : `${TRIPLET[arch]}-`
  const cxx = `${prefix}g++`
  try {
    await exec(cxx, ['--version'], { timeout: 30_000 })
  } catch (err: any) {
    const install = native ? 'g++ (Debian: apt-get install g++)' : `the cross compiler (Debian: apt-get install ${CROSS_PACKAGE[arch]})`
    throw new NativeBuildError('epoll', `compiling native modules for ${arch} needs ${cxx}, which ${err.code === 'ENOENT' ? 'is not installed' : `fails: ${String(err.stderr ?? err.message).trim()}`}; install ${install}`, { cause: err })
  }
  const nodedir = await mkdtemp(join(tmpdir(), `gatemesh-node-headers-${arch}-`))
  try {
    await tar.x({ file: runtime.tarball, cwd: nodedir, strip: 1, filter: path => path.startsWith('package/include/node/') })
    await stat(join(nodedir, 'include', 'node', 'node.h'))
  } catch (err: any) {
    await rm(nodedir, { recursive: true, force: true })
    throw new NativeBuildError('epoll', `${runtime.spec} holds no Node headers (include/node/node.h) to compile native modules against`, { cause: err })
  }
  return {
    arch,
    nodedir,
    cxx,
    env: { CC: `${prefix}gcc`, CXX: cxx, LINK: cxx, AR: `${prefix}ar` },
    dispose: async () => { await rm(nodedir, { recursive: true, force: true }) }
  }
}

/** node-gyp: a devDependency, like esbuild, that only builds images. */
function nodeGyp (): string {
  return createRequire(join(REPO_ROOT, 'package.json')).resolve('node-gyp/bin/node-gyp.js')
}

/**
 * Compile the package in `dir` (a copy inside the image's staging tree) for
 * the toolchain's CPU with node-gyp, keep only `binary`, and check it is an
 * ELF for that CPU. Returns the binary's path below `nodeModules`.
 */
export async function compileFromSource (pkg: string, dir: string, binary: string, tc: Toolchain, nodeModules: string): Promise<string> {
  const args = [nodeGyp(), 'rebuild', `--arch=${tc.arch}`, `--nodedir=${tc.nodedir}`, '--jobs=2']
  try {
    // binding.gyp runs `node -e "require('nan')"`: the staged tree has nan beside the package
    await exec(process.execPath, args, {
      cwd: dir,
      env: { ...cleanEnv(), ...tc.env, PATH: `${join(process.execPath, '..')}:${process.env.PATH ?? '/usr/bin:/bin'}` },
      timeout: 10 * 60_000,
      maxBuffer: 32 * 1024 * 1024
    })
  } catch (err: any) {
    const detail = String(err.stderr ?? err.message).trim().split('\n').filter(l => /error/i.test(l)).slice(-4).join(' | ')
    throw new NativeBuildError(pkg, `compiling ${pkg} for ${tc.arch} with ${tc.cxx} failed: ${detail === '' ? String(err.message) : detail}`, { cause: err })
  }
  const file = join(dir, binary)
  const elf = await readElfHeader(file).catch(() => undefined)
  if (elf?.machine !== ELF_MACHINE[tc.arch] || elf.bits !== 64) {
    throw new NativeBuildError(pkg, `${pkg}: ${binary} is ${describeElf(elf)} after compiling for ${tc.arch}`)
  }
  // keep the one binary: object files and the Makefile would only weigh on the device
  for (const entry of await readdir(join(dir, 'build'), { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name)
    if (entry.isFile() && path !== file) await rm(path, { force: true })
  }
  await removeEmptyDirs(join(dir, 'build'))
  return relative(nodeModules, file).split(sep).join('/')
}

/** npm passes its config to scripts as npm_config_*; node-gyp would read a stray arch or nodedir from it. */
function cleanEnv (): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k)))
}

async function removeEmptyDirs (dir: string): Promise<boolean> {
  let empty = true
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.isDirectory() && await removeEmptyDirs(join(dir, entry.name))) continue
    empty = false
  }
  if (empty) await rm(dir, { recursive: true, force: true })
  return empty
}
