import { cp, mkdir, symlink, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { agentUnit, AGENT_UNIT, loader } from '../../packaging/image/layout.ts'
import { installRelease, packRelease } from '../../packaging/release/index.ts'
import { testBundle } from './app-bundle.ts'
import { parseUnit, UnitSupervisor } from './unit-supervisor.ts'
import type { Signer } from '../../packaging/trust.ts'
import type { KeyObject } from 'node:crypto'

export const NODE_VERSION = process.versions.node

/**
 * A release bundle of this repository's app bundle (or of `app`, an entry
 * of its own, e.g. one that exits at once). The app resolves its external
 * modules from the repository's node_modules, so devices that run it must
 * live under the repository; this keeps a release a few MB.
 */
export async function releaseZip (work: string, version: string, signer: Signer, options: { app?: string, name?: string } = {}): Promise<{ file: string, digest: string, size: number }> {
  const name = options.name ?? version
  const dir = join(work, `tree-${name}`)
  await mkdir(join(dir, 'app'), { recursive: true })
  if (options.app == null) {
    await cp(dirname(await testBundle()), join(dir, 'app'), { recursive: true, filter: src => !src.endsWith('.complete') })
  } else {
    await writeFile(join(dir, 'app', 'gatemesh.mjs'), options.app)
  }
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'gatemesh', version, private: true, type: 'module' }) + '\n')
  const file = join(work, `gatemesh-${name}.zip`)
  const built = await packRelease({ dir, version, arch: 'x64', nodeVersion: NODE_VERSION, signer, out: file })
  return { file, digest: built.digest, size: built.size }
}

export interface FlashedDevice {
  root: string
  releases: string
  unit: UnitSupervisor
}

/**
 * A device as `gatemesh flash` leaves it, in `root`: the image's loader and
 * agent unit, `first` installed from its release bundle and current, the
 * runtime the pinned Node this process runs on; its data directory is
 * `dataDir` (a node directory of the fleet). The unit runs under a stand-in
 * for systemd, optionally inside a network namespace (`prefix`).
 */
export async function flashedDevice (root: string, init: { dataDir: string, first: { file: string, version: string }, fleetPublicKey: KeyObject, prefix?: string[] }): Promise<FlashedDevice> {
  const releases = join(root, 'opt/gatemesh/releases')
  await mkdir(join(releases, 'runtimes', NODE_VERSION, 'bin'), { recursive: true })
  await symlink(process.execPath, join(releases, 'runtimes', NODE_VERSION, 'bin/node'))
  await installRelease({ file: init.first.file, releasesDir: releases, fleetPublicKey: init.fleetPublicKey, arch: 'x64' })
  await symlink(init.first.version, join(releases, 'current'))
  await symlink('releases/current', join(root, 'opt/gatemesh/current'))
  await mkdir(join(root, 'opt/gatemesh/bin'), { recursive: true })
  await writeFile(join(root, 'opt/gatemesh/bin/gatemesh-loader'), loader(), { mode: 0o755 })
  const unitText = agentUnit({ version: init.first.version, arch: 'x64' })
  await mkdir(join(root, 'etc/systemd/system'), { recursive: true })
  await writeFile(join(root, 'etc/systemd/system', AGENT_UNIT), unitText)
  const move = (s: string): string => s.replaceAll('/opt/gatemesh', join(root, 'opt/gatemesh')).replaceAll('/var/lib/gatemesh', init.dataDir)
  const unit = new UnitSupervisor(parseUnit(unitText, move), { log: join(root, 'unit.log'), ...(init.prefix == null ? {} : { prefix: init.prefix }) })
  return { root, releases, unit }
}
