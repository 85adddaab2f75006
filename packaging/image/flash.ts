import { lstat, mkdir, mkdtemp, readlink, rename, rm, symlink, unlink } from 'node:fs/promises'
import { dirname, join, posix, relative, resolve } from 'node:path'
import * as tar from 'tar'
import { archOfElf, describeElf, readElfHeader, type Arch } from './arch.ts'
import { FlashTargetError, ImageArchiveError } from './errors.ts'
import {
  AGENT_UNIT, CLI_LINK, CLI_WRAPPER, CURRENT, CURRENT_LINK, DATA_DIR, IMAGE_MANIFEST, IMAGE_ROOTS, INSTALL_DIR, NODE_VERSION_PATTERN, PREVIOUS,
  RELEASE_VERSION_PATTERN, RELEASES_DIR, RUNTIMES, UNIT_DIR, WANTS_DIR
} from './layout.ts'
import type { ImageManifest } from './manifest.ts'

/** Most an image's manifest may weigh; anything bigger is not ours. */
const MAX_MANIFEST_BYTES = 1024 * 1024

const strip = (p: string): string => p.replace(/^\/+/, '')

/** Directories above the image's roots, which the archive carries as plain directory entries. */
const PARENT_DIRS = new Set(IMAGE_ROOTS.flatMap(r => {
  const parts = r.replace(/\/$/, '').split('/')
  return parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join('/') + '/')
}))

/** Whether an archive path is one an image may write. */
function allowedPath (path: string): boolean {
  const p = path.replace(/^\.\//, '')
  if (PARENT_DIRS.has(p.endsWith('/') ? p : `${p}/`)) return true
  return IMAGE_ROOTS.some(root => root.endsWith('/') ? (p === root || p === root.slice(0, -1) || p.startsWith(root)) : p === root)
}

/**
 * Read an image archive's entries and manifest without writing anything:
 * every entry must be a file or directory below the image's own paths (no
 * links, devices, absolute paths or `..`), and `opt/gatemesh/image.json`
 * must describe it.
 */
export async function inspectImage (file: string): Promise<{ manifest: ImageManifest, entries: number }> {
  let manifestText: string | undefined
  let entries = 0
  let bad: ImageArchiveError | undefined
  try {
    await tar.t({
      file,
      onReadEntry: entry => {
        entries++
        const path = entry.path
        if (bad != null) return
        if (path.startsWith('/') || path.split('/').includes('..')) bad = new ImageArchiveError(`entry "${path}" escapes the root`, path)
        else if (entry.type === 'SymbolicLink') {
          const why = linkProblem(path, String((entry as { linkpath?: unknown }).linkpath ?? ''))
          if (why != null) bad = new ImageArchiveError(`entry "${path}" ${why}`, path)
        } else if (entry.type !== 'File' && entry.type !== 'Directory') bad = new ImageArchiveError(`entry "${path}" is a ${entry.type}; images hold only files, directories and the release links`, path)
        else if (!allowedPath(path)) bad = new ImageArchiveError(`entry "${path}" is outside the paths a gatemesh image may write (${IMAGE_ROOTS.join(', ')})`, path)
        else if (path.replace(/^\.\//, '') === strip(IMAGE_MANIFEST)) {
          if (entry.size > MAX_MANIFEST_BYTES) {
            bad = new ImageArchiveError(`entry "${path}" is too large for a manifest`, path)
            return
          }
          const chunks: Buffer[] = []
          entry.on('data', (c: Buffer) => chunks.push(c))
          entry.on('end', () => { manifestText = Buffer.concat(chunks).toString('utf8') })
        }
      }
    })
  } catch (err: any) {
    throw new ImageArchiveError(`${file} is not a readable gzipped tar archive: ${err.message}`, undefined, { cause: err })
  }
  if (bad != null) throw bad
  if (manifestText == null) throw new ImageArchiveError(`${file} is not a gatemesh image: it has no ${strip(IMAGE_MANIFEST)}`, strip(IMAGE_MANIFEST))
  let manifest: ImageManifest
  try {
    manifest = JSON.parse(manifestText)
  } catch (err: any) {
    throw new ImageArchiveError(`${strip(IMAGE_MANIFEST)} is not JSON: ${err.message}`, strip(IMAGE_MANIFEST), { cause: err })
  }
  if ((manifest?.format !== 1 && manifest?.format !== 2) || manifest.name !== 'gatemesh' || typeof manifest.arch !== 'string' || typeof manifest.version !== 'string') {
    throw new ImageArchiveError(`${strip(IMAGE_MANIFEST)} does not describe a gatemesh image (format 1 or 2)`, strip(IMAGE_MANIFEST))
  }
  return { manifest, entries }
}

const RELEASE_VERSION_RE = new RegExp(RELEASE_VERSION_PATTERN)
const NODE_VERSION_RE = new RegExp(NODE_VERSION_PATTERN)
const RELEASES_PREFIX = strip(RELEASES_DIR) + '/'

/**
 * Images hold three kinds of links, each relative and inside the
 * installation: `current -> releases/current`, `releases/current ->
 * <version>` and `releases/<version>/node -> ../runtimes/<node version>`.
 * Why any other link is refused, or undefined when it is one of these.
 */
function linkProblem (entryPath: string, target: string): string | undefined {
  const p = entryPath.replace(/^\.\//, '')
  if (p === strip(CURRENT_LINK)) return target === `releases/${CURRENT}` ? undefined : `links to "${target}"; it must link to releases/${CURRENT}`
  if (p === `${RELEASES_PREFIX}${CURRENT}` || p === `${RELEASES_PREFIX}${PREVIOUS}`) {
    return RELEASE_VERSION_RE.test(target) ? undefined : `links to "${target}"; it must name a release version`
  }
  const m = new RegExp(`^${RELEASES_PREFIX.replaceAll('.', '\\.')}([^/]+)/node$`).exec(p)
  if (m != null && RELEASE_VERSION_RE.test(m[1]!)) {
    const runtime = /^\.\.\/runtimes\/([^/]+)$/.exec(target)
    return runtime != null && NODE_VERSION_RE.test(runtime[1]!) ? undefined : `links to "${target}"; it must link to ../${RUNTIMES}/<node version>`
  }
  return 'is a symbolic link; images hold links only for their releases (current, releases/current, releases/<version>/node)'
}

async function kind (path: string): Promise<'dir' | 'file' | 'link' | undefined> {
  try {
    const s = await lstat(path)
    return s.isSymbolicLink() ? 'link' : s.isDirectory() ? 'dir' : 'file'
  } catch {
    return undefined
  }
}

/** Follow symlinks inside `root` as the device would see them: absolute targets are relative to `root`. */
async function resolveInRoot (root: string, devicePath: string): Promise<string | undefined> {
  let current = devicePath
  for (let hops = 0; hops < 16; hops++) {
    const parts = strip(current).split('/')
    let prefix = '/'
    let followed = false
    for (let i = 0; i < parts.length; i++) {
      const next = posix.join(prefix, parts[i]!)
      const k = await kind(join(root, next))
      if (k == null) return undefined
      if (k === 'link') {
        const target = await readlink(join(root, next))
        current = posix.join(target.startsWith('/') ? target : posix.join(prefix, target), ...parts.slice(i + 1))
        followed = true
        break
      }
      prefix = next
    }
    if (!followed) return join(root, prefix)
  }
  return undefined
}

/** What `root` is built for, judged by its own programs; undefined when it has none to look at (a scratch tree). */
export async function rootArch (root: string): Promise<{ arch: Arch | undefined, program: string, elf: string } | undefined> {
  for (const program of ['/usr/bin/env', '/bin/sh', '/usr/bin/sh']) {
    const path = await resolveInRoot(root, program)
    if (path == null) continue
    const elf = await readElfHeader(path).catch(() => undefined)
    if (elf == null) continue
    return { arch: archOfElf(elf), program, elf: describeElf(elf) }
  }
  return undefined
}

/**
 * A directory that looks like a Linux root filesystem: `etc/` and `usr/`
 * directories and an os-release file. Anything else is refused before a
 * byte is written: a typo must not scatter files over the build machine.
 */
export async function checkRoot (root: string, arch?: Arch): Promise<void> {
  if (await kind(root) !== 'dir') throw new FlashTargetError(`--root ${root}: not a directory`)
  const missing: string[] = []
  if (await kind(join(root, 'etc')) !== 'dir') missing.push('etc/')
  if (await kind(join(root, 'usr')) !== 'dir') missing.push('usr/')
  if (await resolveInRoot(root, '/etc/os-release') == null && await resolveInRoot(root, '/usr/lib/os-release') == null) missing.push('etc/os-release')
  if (missing.length > 0) throw new FlashTargetError(`--root ${root}: does not look like a Linux root filesystem (no ${missing.join(', no ')})`)
  if (arch != null) {
    const found = await rootArch(root)
    if (found != null && found.arch !== arch) {
      throw new FlashTargetError(`--root ${root}: its ${found.program} is ${found.elf}; this image is for ${arch}`)
    }
  }
}

export interface FlashInit {
  archive: string
  root: string
  log?: (line: string) => void
}

export interface FlashResult {
  manifest: ImageManifest
  /** an earlier installation was replaced */
  upgraded: boolean
  /** what it was: `flat` for images from before releases (app and runtime straight in /opt/gatemesh), `releases` after */
  replacedLayout?: 'flat' | 'releases'
  /** the device already had a node directory, which was kept (identity, config, data) */
  keptData: boolean
  /** the multi-user.target.wants link that enables the agent */
  enabled: string
}

/** A node directory that holds an identity or a pending enrollment: an upgrade must not touch it. */
async function hasNode (dataDir: string): Promise<boolean> {
  for (const f of ['node.cert', 'enroll.json', 'peer.key', 'config.json']) {
    if (await kind(join(dataDir, f)) != null) return true
  }
  return false
}

/**
 * Install an image into a mounted root filesystem: `/opt/gatemesh`
 * replaced as a whole (an upgrade leaves no stale files behind), the units
 * written and the agent enabled through its multi-user.target.wants link,
 * the CLI linked into /usr/local/bin, and the node directory written
 * unless the device already has one. The service user and ownership of
 * the data are set up on the device's next boot (gatemesh-setup.service,
 * StateDirectory=).
 */
export async function flashRoot (init: FlashInit): Promise<FlashResult> {
  const log = init.log ?? (() => {})
  const root = resolve(init.root)
  const { manifest } = await inspectImage(init.archive)
  await checkRoot(root, manifest.arch)

  const install = join(root, INSTALL_DIR)
  const upgraded = await kind(install) != null
  const replacedLayout = !upgraded ? undefined : await kind(join(root, RELEASES_DIR)) === 'dir' ? 'releases' as const : 'flat' as const
  const dataDir = join(root, DATA_DIR)
  const keptData = await hasNode(dataDir)

  // unpack /opt/gatemesh beside the old one, then swap: a failed unpack leaves the old installation working
  await mkdir(dirname(install), { recursive: true })
  const fresh = await mkdtemp(join(dirname(install), '.gatemesh-new-'))
  const optPrefix = strip(INSTALL_DIR) + '/'
  try {
    log(`unpacking ${manifest.name} ${manifest.version} (${manifest.arch}) into ${install}${replacedLayout === 'flat' ? ' (replacing an installation from before releases)' : ''}`)
    await tar.x({ file: init.archive, cwd: fresh, strip: 2, filter: path => path.startsWith(optPrefix) })
    if (upgraded) {
      const old = `${fresh}-old`
      await rename(install, old)
      await rename(fresh, install)
      await rm(old, { recursive: true, force: true })
    } else {
      await rename(fresh, install)
    }
  } catch (err) {
    await rm(fresh, { recursive: true, force: true })
    throw err
  }

  const unitPrefix = strip(UNIT_DIR) + '/'
  const dataPrefix = strip(DATA_DIR) + '/'
  await tar.x({
    file: init.archive,
    cwd: root,
    filter: path => path.startsWith(unitPrefix) || (!keptData && (path.startsWith(dataPrefix) || path === dataPrefix.slice(0, -1)))
  })
  log(keptData ? `kept the node directory already in ${dataDir}` : `wrote the node directory ${dataDir} (${manifest.identity.mode === 'enroll' ? 'join token: enrolls on first boot' : `identity ${manifest.identity.peerId ?? ''}`})`)

  // what `systemctl enable` does: a link in the target's wants directory
  const enabled = join(root, WANTS_DIR, AGENT_UNIT)
  await mkdir(dirname(enabled), { recursive: true })
  await replaceLink(enabled, `${UNIT_DIR}/${AGENT_UNIT}`)
  log(`enabled ${AGENT_UNIT} (${relative(root, enabled)} -> ${UNIT_DIR}/${AGENT_UNIT})`)

  const cliLink = join(root, CLI_LINK)
  if (await kind(dirname(cliLink)) === 'dir' && await kind(cliLink) !== 'file') await replaceLink(cliLink, CLI_WRAPPER)
  return { manifest, upgraded, ...(replacedLayout == null ? {} : { replacedLayout }), keptData, enabled }
}

async function replaceLink (path: string, target: string): Promise<void> {
  if (await kind(path) === 'link') await unlink(path)
  else if (await kind(path) != null) throw new FlashTargetError(`${path} exists and is not a symbolic link; refusing to replace it`)
  await symlink(target, path)
}
