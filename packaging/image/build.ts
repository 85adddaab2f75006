import { chmod, mkdir, mkdtemp, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import * as tar from 'tar'
import { type Arch } from './arch.ts'
import { dirBytes } from './dependencies.ts'
import {
  AGENT_UNIT, agentUnit, CLI_WRAPPER, cliWrapper, CURRENT, CURRENT_LINK, DATA_DIR, IMAGE_MANIFEST, INSTALL_DIR, LOADER, loader, RELEASE_INFO,
  releaseDir, RELEASES_DIR, RUNTIMES, RUNTIMES_DIR, SETUP_UNIT, setupUnit, SYSUSERS_FILE, sysusersConf, UNIT_DIR
} from './layout.ts'
import { STAGE_STEPS, stageRelease } from './stage.ts'
import type { ImageIdentity, ImageManifest, ReleaseInfo } from './manifest.ts'

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

const STEPS = ['node directory', ...STAGE_STEPS, 'system files', 'archive'] as const

/** Inside a root-mirroring staging tree, the path of an absolute device path. */
function at (stage: string, devicePath: string): string {
  return join(stage, devicePath)
}

/**
 * Build a self-contained agent image: a gzipped tarball that mirrors the
 * device's root filesystem (see layout.ts): one release under
 * `/opt/gatemesh/releases/<version>` (the app as one esbuild bundle, its
 * run-time dependencies with `arch`'s native modules) on its Node runtime
 * for `arch`, the `current` links, the loader, systemd units, config and
 * identity.
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

    const release = at(stage, releaseDir(init.version))
    await mkdir(release, { recursive: true })
    // the runtime's version is known once it is fetched: it moves into place below
    const nodeStaging = join(at(stage, RUNTIMES_DIR), '.staging')
    const staged = await stageRelease({
      arch: init.arch,
      version: init.version,
      dir: release,
      nodeDir: nodeStaging,
      ...(init.nodeVersion == null ? {} : { nodeVersion: init.nodeVersion }),
      ...(init.cacheDir == null ? {} : { cacheDir: init.cacheDir }),
      onStep: (step, p) => { progress(1 + STAGE_STEPS.indexOf(step), p ?? {}) }
    })

    progress(1 + STAGE_STEPS.length)
    await rename(nodeStaging, join(at(stage, RUNTIMES_DIR), staged.node.version))
    await symlink(`../${RUNTIMES}/${staged.node.version}`, join(release, 'node'))
    const now = new Date().toISOString()
    const info: ReleaseInfo = { name: 'gatemesh', version: init.version, arch: init.arch, node: staged.node.version, digest: null, publisher: null, createdAt: now, installedAt: now, origin: 'image' }
    await writeText(join(release, RELEASE_INFO), JSON.stringify(info, null, 2) + '\n')
    await symlink(init.version, at(stage, `${RELEASES_DIR}/${CURRENT}`))
    await symlink(`releases/${CURRENT}`, at(stage, CURRENT_LINK))
    await writeText(at(stage, `${UNIT_DIR}/${AGENT_UNIT}`), agentUnit({ version: init.version, arch: init.arch }))
    await writeText(at(stage, `${UNIT_DIR}/${SETUP_UNIT}`), setupUnit())
    await writeText(at(stage, SYSUSERS_FILE), sysusersConf())
    await writeText(at(stage, CLI_WRAPPER), cliWrapper(), 0o755)
    await writeText(at(stage, LOADER), loader(), 0o755)
    const manifest: ImageManifest = {
      format: 2,
      name: 'gatemesh',
      version: init.version,
      arch: init.arch,
      builtAt: now,
      node: staged.node,
      app: { file: `releases/${init.version}/${staged.app.file}`, bytes: staged.app.bytes },
      modules: staged.modules,
      release: { version: init.version, dir: releaseDir(init.version) },
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
    progress(STEPS.length - 1, { done, total })
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
        if (done % 200 === 0 || done === total) progress(STEPS.length - 1, { done, total })
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
