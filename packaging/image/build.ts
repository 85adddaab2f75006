import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import * as tar from 'tar'
import { BUNDLE_EXTERNALS, buildAppBundle, REPO_ROOT } from '../app-bundle.ts'
import { type Arch } from './arch.ts'
import { prepareToolchain, type Toolchain } from './compile.ts'
import { collectPackages, copyPackage, dirBytes, packageNameOf } from './dependencies.ts'
import { agentUnit, cliWrapper, DATA_DIR, INSTALL_DIR, setupUnit, SETUP_UNIT, AGENT_UNIT, SYSUSERS_FILE, sysusersConf, UNIT_DIR, CLI_WRAPPER, IMAGE_MANIFEST } from './layout.ts'
import { fitModelRuntimes } from './model-runtimes.ts'
import { fitNativeModules, OMITTED_FROM_IMAGES, TOOLING_ONLY, type NativeModule } from './natives.ts'
import { fetchNodeRuntime, installNodeRuntime } from './node-runtime.ts'
import type { ImageIdentity, ImageManifest } from './manifest.ts'

export interface ImageProgress {
  step: number
  steps: number
  label: string
  /** for steps that count: items done and total */
  done?: number
  total?: number
}

export interface ImageBuildInit {
  arch: Arch
  /** the archive to write (mode 0600: it holds a private key or a join token) */
  out: string
  version: string
  /**
   * Writes the node directory the image carries (config.json, identity or
   * join token) into `dir`, the image's data directory.
   */
  writeNodeDir: (dir: string) => Promise<ImageIdentity>
  /** @default pinnedNodeVersion() */
  nodeVersion?: string
  /** @default defaultCacheDir() */
  cacheDir?: string
  onProgress?: (progress: ImageProgress) => void
}

export interface ImageBuildResult {
  file: string
  /** size of the archive */
  bytes: number
  manifest: ImageManifest
  durationMs: number
}

const STEPS = ['node directory', 'Node runtime', 'app bundle', 'dependencies', 'native modules', 'system files', 'archive'] as const

/** Inside a root-mirroring staging tree, the path of an absolute device path. */
function at (stage: string, devicePath: string): string {
  return join(stage, devicePath)
}

/**
 * Build a self-contained agent image: a gzipped tarball that mirrors the
 * device's root filesystem (see layout.ts) with the Node runtime for
 * `arch`, the app as one esbuild bundle, its run-time dependencies with
 * `arch`'s prebuilt native modules, systemd units, config and identity.
 */
export async function buildImage (init: ImageBuildInit): Promise<ImageBuildResult> {
  const started = Date.now()
  const out = resolve(init.out)
  const progress = (index: number, extra: Partial<ImageProgress> = {}): void => {
    init.onProgress?.({ step: index + 1, steps: STEPS.length, label: STEPS[index]!, ...extra })
  }
  const stage = await mkdtemp(join(tmpdir(), 'gatemesh-image-'))
  try {
    const install = at(stage, INSTALL_DIR)
    const data = at(stage, DATA_DIR)

    // first: it checks the flags about identity, which should fail before the slow steps
    progress(0)
    await mkdir(dirname(data), { recursive: true })
    const identity = await init.writeNodeDir(data)
    await chmod(data, 0o700)

    progress(1)
    const runtime = await fetchNodeRuntime({ arch: init.arch, ...(init.nodeVersion == null ? {} : { version: init.nodeVersion }), ...(init.cacheDir == null ? {} : { cacheDir: init.cacheDir }) })
    const node = await installNodeRuntime(runtime, init.arch, join(install, 'node'))

    progress(2)
    const bundle = await buildAppBundle(join(install, 'app', 'gatemesh.mjs'))
    // the bundle reads its version from ../package.json, and node_modules sits beside it as in any npm project
    await writeFile(join(install, 'package.json'), JSON.stringify({ name: 'gatemesh', version: init.version, private: true, type: 'module' }, null, 2) + '\n')

    const imported = [...new Set(bundle.externalImports.map(packageNameOf).filter((n): n is string => n != null))]
      .filter(n => !TOOLING_ONLY.includes(n))
    // esbuild also leaves out imports it cannot resolve inside try/catch (ws's bufferutil): optional by construction
    const roots = imported.filter(isDeclaredExternal)
    const optionalRoots = imported.filter(n => !isDeclaredExternal(n))
    const { packages, omitted } = await collectPackages({ root: REPO_ROOT, roots, optionalRoots, omit: OMITTED_FROM_IMAGES })
    const nodeModules = join(install, 'node_modules')
    for (const [i, pkg] of packages.entries()) {
      progress(3, { done: i, total: packages.length })
      await copyPackage(pkg, nodeModules)
    }
    progress(3, { done: packages.length, total: packages.length })

    progress(4)
    const runtimes = await fitModelRuntimes(nodeModules, init.arch)
    // the compiler and headers are looked for only when a package needs compiling
    let toolchain: Promise<Toolchain> | undefined
    let natives: NativeModule[]
    try {
      natives = await fitNativeModules(packages, nodeModules, init.arch, async () => await (toolchain ??= prepareToolchain(runtime, init.arch)))
    } finally {
      await (await toolchain?.catch(() => undefined))?.dispose()
    }
    for (const r of runtimes) {
      if (r.binaries.length > 0) natives.push({ package: r.package, version: packages.find(p => p.name === r.package)?.version ?? '', binaries: r.binaries, origin: 'prebuilt' })
    }

    progress(5)
    await writeText(at(stage, `${UNIT_DIR}/${AGENT_UNIT}`), agentUnit({ version: init.version, arch: init.arch }))
    await writeText(at(stage, `${UNIT_DIR}/${SETUP_UNIT}`), setupUnit())
    await writeText(at(stage, SYSUSERS_FILE), sysusersConf())
    await writeText(at(stage, CLI_WRAPPER), cliWrapper(), 0o755)
    const manifest: ImageManifest = {
      format: 1,
      name: 'gatemesh',
      version: init.version,
      arch: init.arch,
      builtAt: new Date().toISOString(),
      node: { version: runtime.version, package: runtime.spec, bytes: node.bytes },
      app: { file: 'app/gatemesh.mjs', bytes: bundle.bytes },
      modules: { packages: packages.length, bytes: await dirBytes(nodeModules), natives, omitted, runtimes: runtimes.map(r => ({ package: r.package, bytesBefore: r.bytesBefore, bytesAfter: r.bytesAfter })) },
      identity,
      unpackedBytes: 0
    }
    // opt/ must be readable by the service user whatever the builder's umask was
    await normaliseModes(install)
    await normaliseModes(at(stage, UNIT_DIR))
    // parents such as /var and /etc are entries too: a plain `tar -x` at / must not narrow them
    for (const parent of ['opt', 'var', 'var/lib', 'etc', 'etc/systemd']) await chmod(join(stage, parent), 0o755)
    manifest.unpackedBytes = await dirBytes(stage)
    await writeText(at(stage, IMAGE_MANIFEST), JSON.stringify(manifest, null, 2) + '\n')

    const entries = ['opt', 'var', 'etc']
    const total = await countEntries(stage)
    let done = 0
    progress(6, { done, total })
    await mkdir(dirname(out), { recursive: true })
    const partial = `${out}.partial`
    await tar.c({
      file: partial,
      cwd: stage,
      gzip: { level: 6 },
      portable: true,
      // the archive holds a private key or a join token
      mode: 0o600,
      filter: () => {
        done++
        if (done % 200 === 0 || done === total) progress(6, { done, total })
        return true
      }
    }, entries)
    await chmod(partial, 0o600)
    await rename(partial, out)
    const bytes = (await stat(out)).size
    return { file: out, bytes, manifest, durationMs: Date.now() - started }
  } finally {
    await rm(stage, { recursive: true, force: true })
  }
}

/** Whether the bundle was told to leave `name` out (`@scope/*` patterns included). */
function isDeclaredExternal (name: string): boolean {
  return BUNDLE_EXTERNALS.some(p => p === name || (p.endsWith('/*') && name.startsWith(p.slice(0, -1))))
}

async function writeText (path: string, text: string, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  await writeFile(path, text, { mode })
  await chmod(path, mode)
}

/** Directories 0755, files 0644, or 0755 when their owner may execute them. */
async function normaliseModes (dir: string): Promise<void> {
  await chmod(dir, 0o755)
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name)
    if (entry.isDirectory()) await chmod(path, 0o755)
    else if (entry.isFile()) await chmod(path, ((await stat(path)).mode & 0o100) !== 0 ? 0o755 : 0o644)
  }
}

async function countEntries (dir: string): Promise<number> {
  return (await readdir(dir, { recursive: true })).length
}
