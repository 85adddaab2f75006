import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative, resolve, sep } from 'node:path'
import type { ChunkIndex, ZipSource } from '../bundle/index.ts'
import { publisherOf, sha256File, writeSignedZip } from '../bundle/build.ts'
import { type Arch } from '../image/arch.ts'
import { inspectImage } from '../image/flash.ts'
import { STAGE_STEPS, stageRelease, type StageStep } from '../image/stage.ts'
import type { Signer } from '../trust.ts'
import { ReleaseError } from './errors.ts'
import { MAX_RELEASE_FILES, parseReleaseManifest, RELEASE_KIND, TYP_RELEASE_MANIFEST, type ReleaseFile, type ReleaseManifest } from './manifest.ts'
import { readReleaseManifest } from './verify.ts'

export interface BuiltRelease {
  digest: string
  size: number
  out: string
  manifest: ReleaseManifest
  index: ChunkIndex
}

export interface PackReleaseInit {
  /** the release tree: app/, node_modules/, package.json */
  dir: string
  /** the Node runtime's directory (`bin/node`, `LICENSE`); shipped when given */
  nodeDir?: string
  version: string
  arch: Arch
  nodeVersion: string
  natives?: ReleaseManifest['natives']
  /** the fleet key, or a publisher key with its fleet-signed certificate */
  signer: Signer
  out: string
  /** @default now */
  createdAt?: Date
}

/** Already compressed: deflating them again costs time for nothing. */
const STORED = /\.(gz|tgz|zip|br|png|jpe?g|gif|webp|woff2?)$/i


/** Every regular file under `dir`, by its path relative to `dir` with `/`; links and devices are refused. */
async function filesOf (dir: string, prefix: string): Promise<Array<{ path: string, file: string, size: number, exec: boolean }>> {
  const out: Array<{ path: string, file: string, size: number, exec: boolean }> = []
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const file = join(entry.parentPath, entry.name)
    if (entry.isDirectory()) continue
    const path = prefix + relative(dir, file).split(sep).join('/')
    if (!entry.isFile()) throw new ReleaseError(`${file}: a release holds regular files only, not ${entry.isSymbolicLink() ? 'links' : 'special files'}`)
    const s = await lstat(file)
    out.push({ path, file, size: s.size, exec: (s.mode & 0o100) !== 0 })
  }
  return out
}

/**
 * Sign a release tree into a release bundle: every file listed with its
 * size, sha256 and whether it is executable, the manifest signed as a
 * release (detached JWS), and the zip written with its chunk index, so it
 * travels through the bundle store and peer-to-peer transfer like a model.
 */
export async function packRelease (init: PackReleaseInit): Promise<BuiltRelease> {
  const found = [
    ...await filesOf(resolve(init.dir), ''),
    ...(init.nodeDir == null ? [] : await filesOf(resolve(init.nodeDir), 'node/'))
  ].filter(f => f.path !== 'release.json').sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
  if (found.length > MAX_RELEASE_FILES) throw new ReleaseError(`the release holds ${found.length} files; a bundle may hold at most ${MAX_RELEASE_FILES}`)
  const files: ReleaseFile[] = []
  const sources: ZipSource[] = []
  for (const f of found) {
    files.push({ path: f.path, size: f.size, sha256: await sha256File(f.file), ...(f.exec ? { exec: true as const } : {}) })
    sources.push({ path: f.path, file: f.file, compress: !STORED.test(f.path) })
  }
  const createdAt = init.createdAt ?? new Date()
  const manifest: ReleaseManifest = {
    schemaVersion: 1,
    kind: RELEASE_KIND,
    name: 'gatemesh',
    version: init.version,
    arch: init.arch,
    createdAt: createdAt.toISOString(),
    publisher: publisherOf(init.signer),
    node: { version: init.nodeVersion, included: init.nodeDir != null },
    natives: init.natives ?? [],
    files
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n')
  // the checks every receiver runs, so a bad version or path fails here and not on a gateway
  parseReleaseManifest(manifestBytes)
  const written = await writeSignedZip(manifestBytes, TYP_RELEASE_MANIFEST, init.signer, sources, init.out, createdAt)
  return { ...written, out: init.out, manifest }
}

export interface ReleaseBuildInit {
  arch: Arch
  version: string
  out: string
  signer: Signer
  /** Ship the Node runtime whatever the base. @default false */
  withNode?: boolean
  /**
   * An image archive or release bundle the fleet runs: the runtime is
   * shipped only when this release's differs from the base's.
   */
  base?: string
  /** @default pinnedNodeVersion() */
  nodeVersion?: string
  /** @default defaultCacheDir() */
  cacheDir?: string
  onStep?: (step: StageStep | 'sign and pack', progress?: { done: number, total: number }) => void
}

export interface ReleaseBuildResult extends BuiltRelease {
  /** why the runtime is in or out */
  node: { version: string, included: boolean, why: string }
  durationMs: number
}

/** The Node version an image or a release runs on, read from its manifest (not verified: it only decides what to ship). */
export async function baseNodeVersion (file: string): Promise<string> {
  if (/\.(tar\.gz|tgz)$/.test(file)) return (await inspectImage(file)).manifest.node.version
  return (await readReleaseManifest(file)).node.version
}

/**
 * `gatemesh release build`: the image's app, modules and (when asked, or
 * when it differs from the base's) Node runtime for `arch`, staged exactly
 * as an image stages them and signed into a release bundle.
 */
export async function buildRelease (init: ReleaseBuildInit): Promise<ReleaseBuildResult> {
  const started = Date.now()
  const baseNode = init.base == null ? undefined : await baseNodeVersion(init.base)
  const work = await mkdtemp(join(tmpdir(), 'gatemesh-release-'))
  try {
    const dir = join(work, 'release')
    const nodeDir = join(work, 'node')
    const staged = await stageRelease({
      arch: init.arch,
      version: init.version,
      dir,
      nodeDir,
      ...(init.nodeVersion == null ? {} : { nodeVersion: init.nodeVersion }),
      ...(init.cacheDir == null ? {} : { cacheDir: init.cacheDir }),
      ...(init.onStep == null ? {} : { onStep: init.onStep })
    })
    const version = staged.node.version
    const included = init.withNode === true || (baseNode != null && baseNode !== version)
    const why = init.withNode === true
      ? 'asked for (--with-node)'
      : baseNode == null
        ? 'left out: nodes must hold it already (--with-node ships it; --base ships it only when it changed)'
        : baseNode === version ? `left out: the base runs Node ${baseNode} already` : `the base runs Node ${baseNode}`
    init.onStep?.('sign and pack')
    const built = await packRelease({
      dir,
      ...(included ? { nodeDir } : {}),
      version: init.version,
      arch: init.arch,
      nodeVersion: version,
      natives: staged.modules.natives,
      signer: init.signer,
      out: resolve(init.out)
    })
    return { ...built, node: { version, included, why }, durationMs: Date.now() - started }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

export const RELEASE_STEPS = [...STAGE_STEPS, 'sign and pack'] as const
