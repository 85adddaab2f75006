import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BUNDLE_EXTERNALS, buildAppBundle, REPO_ROOT } from '../app-bundle.ts'
import { type Arch } from './arch.ts'
import { prepareToolchain, type Toolchain } from './compile.ts'
import { collectPackages, copyPackage, dirBytes, packageNameOf } from './dependencies.ts'
import { fitModelRuntimes } from './model-runtimes.ts'
import { fitNativeModules, OMITTED_FROM_IMAGES, TOOLING_ONLY, type NativeModule } from './natives.ts'
import { fetchNodeRuntime, installNodeRuntime, type NodeRuntime } from './node-runtime.ts'
import { RELEASE_APP } from './layout.ts'
import type { ImageManifest } from './manifest.ts'

/** The steps of staging, in order, as progress reports them. */
export const STAGE_STEPS = ['Node runtime', 'app bundle', 'dependencies', 'native modules'] as const
export type StageStep = typeof STAGE_STEPS[number]

export interface StageInit {
  arch: Arch
  /** the version the app reports and package.json names */
  version: string
  /** the release directory to fill: app/, node_modules/, package.json */
  dir: string
  /** where the Node runtime goes (`<nodeDir>/bin/node`) */
  nodeDir: string
  /** @default pinnedNodeVersion() */
  nodeVersion?: string
  /** @default defaultCacheDir() */
  cacheDir?: string
  onStep?: (step: StageStep, progress?: { done: number, total: number }) => void
}

/** What a staged release holds. */
export interface StagedRelease {
  node: ImageManifest['node']
  app: ImageManifest['app']
  /** as an image manifest tells them, the model runtimes always given (only format 1 manifests lack them) */
  modules: ImageManifest['modules'] & { runtimes: NonNullable<ImageManifest['modules']['runtimes']> }
  runtime: NodeRuntime
}

/**
 * Lay out one agent release in `dir`, as images and release bundles both
 * ship it: the app as one esbuild bundle, its run-time dependencies with
 * `arch`'s prebuilt (or cross-compiled) native modules and its model
 * runtimes fitted to `arch`, and npm's Node runtime for `arch` in `nodeDir`.
 */
export async function stageRelease (init: StageInit): Promise<StagedRelease> {
  const step = init.onStep ?? (() => {})
  step('Node runtime')
  const runtime = await fetchNodeRuntime({ arch: init.arch, ...(init.nodeVersion == null ? {} : { version: init.nodeVersion }), ...(init.cacheDir == null ? {} : { cacheDir: init.cacheDir }) })
  const node = await installNodeRuntime(runtime, init.arch, init.nodeDir)

  step('app bundle')
  const bundle = await buildAppBundle(join(init.dir, RELEASE_APP), { version: init.version })
  // the bundle reads its version from ../package.json, and node_modules sits beside it as in any npm project
  await writeFile(join(init.dir, 'package.json'), JSON.stringify({ name: 'gatemesh', version: init.version, private: true, type: 'module' }, null, 2) + '\n')

  const imported = [...new Set(bundle.externalImports.map(packageNameOf).filter((n): n is string => n != null))]
    .filter(n => !TOOLING_ONLY.includes(n))
  // esbuild also leaves out imports it cannot resolve inside try/catch (ws's bufferutil): optional by construction
  const roots = imported.filter(isDeclaredExternal)
  const optionalRoots = imported.filter(n => !isDeclaredExternal(n))
  const { packages, omitted } = await collectPackages({ root: REPO_ROOT, roots, optionalRoots, omit: OMITTED_FROM_IMAGES })
  const nodeModules = join(init.dir, 'node_modules')
  for (const [i, pkg] of packages.entries()) {
    step('dependencies', { done: i, total: packages.length })
    await copyPackage(pkg, nodeModules)
  }
  step('dependencies', { done: packages.length, total: packages.length })

  step('native modules')
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
  return {
    node: { version: runtime.version, package: runtime.spec, bytes: node.bytes },
    app: { file: RELEASE_APP, bytes: bundle.bytes },
    modules: { packages: packages.length, bytes: await dirBytes(nodeModules), natives, omitted, runtimes: runtimes.map(r => ({ package: r.package, bytesBefore: r.bytesBefore, bytesAfter: r.bytesAfter })) },
    runtime
  }
}

/** Whether the bundle was told to leave `name` out (`@scope/*` patterns included). */
function isDeclaredExternal (name: string): boolean {
  return BUNDLE_EXTERNALS.some(p => p === name || (p.endsWith('/*') && name.startsWith(p.slice(0, -1))))
}
