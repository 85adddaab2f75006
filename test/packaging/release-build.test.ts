import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { installRelease, verifyRelease } from '../../packaging/release/index.ts'
import { CLI } from '../helpers/cluster.ts'
import { elfMachine } from '../helpers/image.ts'
import { exec, run } from '../helpers/processes.ts'

/**
 * `gatemesh release build` for real: the image's app, modules and Node
 * runtime staged as an image stages them, signed into a release bundle
 * that verifies, installs beside nothing, and runs on its own runtime.
 * (Its content rules are tested on small trees in release.test.ts.)
 */
const work = await mkdtemp(join(tmpdir(), 'gatemesh-release-build-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })
const fleetDir = join(work, 'fleet')
await initFleet(fleetDir)
const fleet = await loadFleet(fleetDir)
const out = join(work, 'gatemesh-9.9.9-x64.zip')

await t.test('release build writes a signed bundle and says what is in it', async t => {
  const { stdout } = await run(process.execPath, [CLI, 'release', 'build', '--arch', 'x64', '--fleet', fleetDir, '--version', '9.9.9', '--with-node', '--out', out], { timeoutMs: 15 * 60_000 })
  t.match(stdout, /built release 9\.9\.9 for x64/)
  t.match(stdout, /node {4}\d+\.\d+\.\d+: included \(asked for \(--with-node\)\)/)
  const v = await verifyRelease(out, { fleetPublicKey: fleet.publicKey })
  t.equal(v.manifest.version, '9.9.9')
  t.equal(v.manifest.arch, 'x64')
  t.ok(v.manifest.node.included)
  t.ok(v.manifest.files.some(f => f.path === 'app/gatemesh.mjs'), 'the app')
  t.ok(v.manifest.files.some(f => f.path.startsWith('node_modules/classic-level/')), 'its run-time modules')
  t.ok(v.manifest.files.some(f => f.path === 'node/bin/node' && f.exec === true), 'the runtime, executable')
})

await t.test('it installs beside nothing and runs on its own runtime', async t => {
  const releases = join(work, 'releases')
  const { mkdir } = await import('node:fs/promises')
  await mkdir(releases)
  const installed = await installRelease({ file: out, releasesDir: releases, fleetPublicKey: fleet.publicKey, arch: 'x64' })
  t.ok(installed.runtimeInstalled, 'the runtime went to runtimes/')
  t.same((await readdir(releases)).sort(), ['9.9.9', 'runtimes'])
  const node = join(releases, '9.9.9', 'node/bin/node')
  t.equal(await elfMachine(node), 0x3e, 'an x86-64 Node')
  t.ok(((await stat(node)).mode & 0o111) !== 0, 'executable')
  const { stdout } = await exec(node, [join(releases, '9.9.9', 'app/gatemesh.mjs'), '--version'], { env: { PATH: '/usr/bin:/bin' } })
  t.equal(stdout.trim(), '9.9.9', 'the release\'s app reports its version')
})
