import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { access, chmod, lstat, mkdir, open, readdir, readFile, readlink, rename, rm, symlink, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { scanArchive, PathTraversalError, type BundleLimits, type FileSink } from '../bundle/index.ts'
import { CURRENT, PREVIOUS, RELEASE_INFO, RELEASE_NODE, RUNTIMES } from '../image/layout.ts'
import { IncompatibleReleaseError, ReleaseInstallError } from './errors.ts'
import { RELEASE_BUNDLE, type ReleaseManifest } from './manifest.ts'
import type { Arch } from '../image/arch.ts'
import type { ReleaseInfo } from '../image/manifest.ts'
import type { VerifiedRelease } from './verify.ts'
import type { KeyObject } from 'node:crypto'

export interface InstallReleaseInit {
  /** the release bundle (a zip in the bundle store, or a file handed over) */
  file: string
  /** `/opt/gatemesh/releases` (or its copy under a test root) */
  releasesDir: string
  fleetPublicKey: KeyObject
  /** this node's CPU: a release for another one is refused before anything is written */
  arch: Arch
  /** when known (a pull by digest), the zip must hash to exactly this */
  digest?: string
  limits?: Partial<BundleLimits>
}

export interface InstalledRelease {
  dir: string
  manifest: ReleaseManifest
  info: ReleaseInfo
  /** it was installed already, from the same bundle */
  reused: boolean
  /** the Node runtime came with it (it was not on the node) */
  runtimeInstalled: boolean
}

async function exists (path: string): Promise<boolean> {
  return await lstat(path).then(() => true, () => false)
}

/** The release a link in `releasesDir` names (`current`, `previous`), if any. */
export async function linkedRelease (releasesDir: string, name: string): Promise<string | undefined> {
  try {
    const target = await readlink(join(releasesDir, name))
    return target.split('/').pop()
  } catch {
    return undefined
  }
}

/** What a release directory says it is; undefined when it says nothing readable. */
export async function readReleaseInfo (dir: string): Promise<ReleaseInfo | undefined> {
  try {
    const text = await readFile(join(dir, RELEASE_INFO), 'utf8')
    if (text.length > 64 * 1024) return undefined
    const info = JSON.parse(text) as ReleaseInfo
    return typeof info?.version === 'string' && typeof info.node === 'string' ? info : undefined
  } catch {
    return undefined
  }
}

/** A write-once file under `root` with the mode the manifest gives it; containment is re-checked. */
function fileSink (root: string, path: string, mode: number): FileSink {
  const target = resolve(root, path)
  const rel = relative(root, target)
  if (rel === '' || rel.startsWith('..') || rel.split(sep).includes('..')) {
    throw new PathTraversalError(`${path}: path escapes the release directory`, { entry: path })
  }
  let fh: FileHandle | undefined
  let opening: Promise<FileHandle> | undefined
  const handle = async (): Promise<FileHandle> => {
    opening ??= (async () => {
      await mkdir(dirname(target), { recursive: true, mode: 0o755 })
      // 'wx': never follow or overwrite anything already there
      fh = await open(target, 'wx', mode)
      return fh
    })()
    return await opening
  }
  return {
    async write (chunk) { await (await handle()).write(chunk) },
    async close () {
      await (await handle()).close()
      // the umask must not narrow what the service user and the CLI read
      await chmod(target, mode)
    },
    async abort () {
      await fh?.close().catch(() => {})
      await rm(target, { force: true })
    }
  }
}

/** Thrown from the manifest check to stop a scan whose release is in place already. */
class AlreadyInstalled extends Error {
  readonly manifest: ReleaseManifest
  readonly info: ReleaseInfo
  constructor (manifest: ReleaseManifest, info: ReleaseInfo) {
    super('installed already')
    this.manifest = manifest
    this.info = info
  }
}

/** Bytes that are checked (by the scan) and dropped: a runtime the node holds already. */
const DISCARD: FileSink = { async write () {}, async close () {}, async abort () {} }

/**
 * Install a release bundle into `releasesDir/<version>`, beside the running
 * one: the whole bundle is verified as it streams (chunk index, signature,
 * every file's sha256) into a staging directory, which becomes the release
 * only when every check passed. The release's CPU and Node runtime are
 * checked against this node before a byte is written. A runtime the bundle
 * brings goes to `runtimes/<node version>`, shared by every release that
 * runs on it; the release links to it as `node`.
 */
export async function installRelease (init: InstallReleaseInit): Promise<InstalledRelease> {
  const releases = resolve(init.releasesDir)
  try {
    await access(releases, constants.W_OK)
    await mkdir(join(releases, RUNTIMES), { recursive: true, mode: 0o755 })
    await access(join(releases, RUNTIMES), constants.W_OK)
  } catch (err: any) {
    throw new ReleaseInstallError(`cannot install releases into ${releases}: ${err.code ?? err.message} (the agent unit's ExecStartPre gives it to the service user)`, { cause: err })
  }
  const tag = randomBytes(4).toString('hex')
  const staging = join(releases, `.unpacking-${tag}`)
  const runtimeStaging = join(releases, RUNTIMES, `.unpacking-${tag}`)
  let keepRuntime = false
  try {
    await mkdir(staging, { mode: 0o755 })
    let verified: VerifiedRelease
    try {
      verified = await scanArchive(init.file, {
        fleetPublicKey: init.fleetPublicKey,
        ...(init.digest == null ? {} : { digest: init.digest }),
        ...(init.limits == null ? {} : { limits: init.limits })
      }, [RELEASE_BUNDLE], (path, file) => {
        if (path.startsWith('node/')) {
          if (!keepRuntime) return DISCARD
          return fileSink(runtimeStaging, path.slice('node/'.length), file.mode ?? 0o644)
        }
        return fileSink(staging, path, file.mode ?? 0o644)
      }, async (m: ReleaseManifest) => {
        if (m.arch !== init.arch) throw new IncompatibleReleaseError(`release ${m.version} is for ${m.arch}; this node is ${init.arch}`)
        // the zip hashed to the digest asked for, and that bundle is installed: nothing to write
        const installed = await readReleaseInfo(join(releases, m.version))
        if (init.digest != null && installed?.digest === init.digest) throw new AlreadyInstalled(m, installed)
        const held = await exists(join(releases, RUNTIMES, m.node.version, 'bin', 'node'))
        if (!held && !m.node.included) {
          throw new IncompatibleReleaseError(`release ${m.version} runs on Node ${m.node.version}, which this node does not hold and the release does not bring (build it with --with-node, or --base an image this fleet runs)`)
        }
        keepRuntime = !held
        if (keepRuntime) await mkdir(runtimeStaging, { mode: 0o755 })
      }) as VerifiedRelease
    } catch (err) {
      if (err instanceof AlreadyInstalled) return { dir: join(releases, err.manifest.version), manifest: err.manifest, info: err.info, reused: true, runtimeInstalled: false }
      throw err
    }
    const m = verified.manifest
    const dest = join(releases, m.version)
    const existing = await readReleaseInfo(dest)
    if (existing?.digest === verified.digest) {
      return { dir: dest, manifest: m, info: existing, reused: true, runtimeInstalled: false }
    }
    if (await exists(dest)) {
      // a version that is running, or that the loader would go back to, is never replaced under it
      if ([await linkedRelease(releases, CURRENT), await linkedRelease(releases, PREVIOUS)].includes(m.version)) {
        throw new ReleaseInstallError(`release ${m.version} is installed already from another bundle (${existing?.digest ?? 'an image'}) and is in use; give the new build another version`)
      }
      await rm(dest, { recursive: true, force: true })
    }
    if (keepRuntime) {
      const runtimeDir = join(releases, RUNTIMES, m.node.version)
      if (await exists(runtimeDir)) await rm(runtimeStaging, { recursive: true, force: true })
      else await rename(runtimeStaging, runtimeDir)
    }
    await symlink(`../${RUNTIMES}/${m.node.version}`, join(staging, 'node'))
    if (!await exists(join(staging, RELEASE_NODE))) throw new IncompatibleReleaseError(`release ${m.version}: ${RELEASE_NODE} is missing after install`)
    const info: ReleaseInfo = {
      name: 'gatemesh',
      version: m.version,
      arch: m.arch,
      node: m.node.version,
      digest: verified.digest,
      publisher: verified.signer,
      createdAt: m.createdAt,
      installedAt: new Date().toISOString(),
      origin: 'release'
    }
    await writeFile(join(staging, RELEASE_INFO), JSON.stringify(info, null, 2) + '\n', { mode: 0o644 })
    await rename(staging, dest)
    return { dir: dest, manifest: m, info, reused: false, runtimeInstalled: keepRuntime }
  } finally {
    await rm(staging, { recursive: true, force: true })
    await rm(runtimeStaging, { recursive: true, force: true })
  }
}

/**
 * Remove releases and runtimes nothing needs: every release but `keep`
 * (the current, previous and any being staged) and every runtime none of
 * the kept releases runs on. Half-unpacked leftovers go too. Returns what
 * was removed.
 */
export async function pruneReleases (releasesDir: string, keep: string[]): Promise<string[]> {
  const releases = resolve(releasesDir)
  const removed: string[] = []
  const kept = new Set(keep)
  const runtimes = new Set<string>()
  for (const v of kept) {
    const info = await readReleaseInfo(join(releases, v))
    if (info != null) runtimes.add(info.node)
  }
  for (const entry of await readdir(releases, { withFileTypes: true })) {
    if (entry.name === CURRENT || entry.name === PREVIOUS || entry.name === RUNTIMES || kept.has(entry.name)) continue
    if (entry.name.startsWith('.') && !entry.name.startsWith('.unpacking-')) continue
    await rm(join(releases, entry.name), { recursive: true, force: true }).then(() => { removed.push(entry.name) }, () => {})
  }
  for (const entry of await readdir(join(releases, RUNTIMES), { withFileTypes: true }).catch(() => [])) {
    if (runtimes.has(entry.name)) continue
    await rm(join(releases, RUNTIMES, entry.name), { recursive: true, force: true }).then(() => { removed.push(`${RUNTIMES}/${entry.name}`) }, () => {})
  }
  return removed
}
