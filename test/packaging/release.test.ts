import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { buildBundle, verifyBundle } from '../../packaging/bundle/index.ts'
import {
  installRelease, packRelease, parseReleaseManifest, pruneReleases, readReleaseManifest, verifyAnyBundle, verifyRelease, type BuiltRelease
} from '../../packaging/release/index.ts'
import { issuePublisherCert } from '../../packaging/trust.ts'
import { saveLayersModel } from '../helpers/models.ts'
import { fakeReleaseTree, fakeRuntime } from '../helpers/release-tree.ts'
import { generateKeyPairSync } from 'node:crypto'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-release-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
await initFleet(join(root, 'fleet'))
await initFleet(join(root, 'other'))
const fleet = await loadFleet(join(root, 'fleet'))
const other = await loadFleet(join(root, 'other'))
const NODE = '22.23.3'

const tree = join(root, 'tree')
const runtime = join(root, 'runtime')
await fakeReleaseTree(tree, { version: '0.2.0' })
await fakeRuntime(runtime, { script: '#!/bin/sh\necho fake node\n' })

async function pack (version: string, extra: Partial<Parameters<typeof packRelease>[0]> = {}): Promise<BuiltRelease> {
  return await packRelease({ dir: tree, version, arch: 'x64', nodeVersion: NODE, signer: { key: fleet.privateKey }, out: join(root, `gatemesh-${version}-${Math.random().toString(36).slice(2)}.zip`), ...extra })
}

/** An empty releases directory, as an image leaves one. */
async function releasesDir (): Promise<string> {
  const dir = await mkdtemp(join(root, 'releases-'))
  await mkdir(join(dir, 'runtimes'))
  return dir
}

/** Nothing but what was there: no release, runtime or staging directory. */
async function untouched (t: Test, dir: string, what: string): Promise<void> {
  t.same(await readdir(dir), ['runtimes'], `${what}: nothing written next to the releases`)
  t.same(await readdir(join(dir, 'runtimes')), [], `${what}: no runtime written`)
}

const withNode = await pack('0.2.0', { nodeDir: runtime })

await t.test('a release bundle lists every file with its size, sha256 and exec bit, and verifies', async t => {
  const m = withNode.manifest
  t.equal(m.kind, 'gatemesh-release')
  t.same(m.node, { version: NODE, included: true })
  const byPath = new Map(m.files.map(f => [f.path, f]))
  t.ok(byPath.has('node_modules/@scope/pkg/prebuilt@linux+x64.node'), 'scoped package paths with @ and + are kept')
  t.equal(byPath.get('node_modules/tool/bin/run')?.exec, true, 'executables are marked')
  t.equal(byPath.get('node/bin/node')?.exec, true, 'the runtime is in, executable')
  t.equal(byPath.get('app/gatemesh.mjs')?.exec, undefined)
  const v = await verifyRelease(withNode.out, { fleetPublicKey: fleet.publicKey })
  t.equal(v.digest, withNode.digest)
  t.equal(v.signer, 'fleet')
  const any = await verifyAnyBundle(withNode.out, { fleetPublicKey: fleet.publicKey, digest: withNode.digest })
  t.equal(any.kind, 'release', 'the bundle store tells a release from a model by its signature type')
  t.equal((await readReleaseManifest(withNode.out)).version, '0.2.0')
})

await t.test('install: beside the others, with its runtime, modes kept, release.json written', async t => {
  const dir = await releasesDir()
  const r = await installRelease({ file: withNode.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64', digest: withNode.digest })
  t.equal(r.dir, join(dir, '0.2.0'))
  t.equal(r.runtimeInstalled, true)
  t.equal(await readlink(join(dir, '0.2.0', 'node')), `../runtimes/${NODE}`, 'the release links to its runtime')
  t.equal((await stat(join(dir, 'runtimes', NODE, 'bin', 'node'))).mode & 0o777, 0o755, 'the runtime is executable')
  t.equal((await stat(join(dir, '0.2.0', 'node_modules/tool/bin/run'))).mode & 0o777, 0o755)
  t.equal((await stat(join(dir, '0.2.0', 'app/gatemesh.mjs'))).mode & 0o777, 0o644)
  t.equal(await readFile(join(dir, '0.2.0', 'node_modules/@scope/pkg/index.js'), 'utf8'), 'module.exports = 1\n')
  const info = JSON.parse(await readFile(join(dir, '0.2.0', 'release.json'), 'utf8'))
  t.match(info, { version: '0.2.0', arch: 'x64', node: NODE, digest: withNode.digest, publisher: 'fleet', origin: 'release' })
  t.same((await readdir(dir)).sort(), ['0.2.0', 'runtimes'], 'no staging directories left behind')

  const again = await installRelease({ file: withNode.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64', digest: withNode.digest })
  t.equal(again.reused, true, 'the same bundle again is a no-op')

  const lean = await pack('0.3.0')
  t.same(lean.manifest.node, { version: NODE, included: false }, 'a release may leave the runtime out')
  t.notOk(lean.manifest.files.some(f => f.path.startsWith('node/')))
  const r3 = await installRelease({ file: lean.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' })
  t.equal(r3.runtimeInstalled, false)
  t.equal(await readlink(join(dir, '0.3.0', 'node')), `../runtimes/${NODE}`, 'and runs on the runtime the node holds')

  await symlink('0.3.0', join(dir, 'current'))
  await symlink('0.2.0', join(dir, 'previous'))
  await mkdir(join(dir, '0.1.0'))
  await mkdir(join(dir, 'runtimes', '20.0.0'))
  const removed = await pruneReleases(dir, ['0.3.0', '0.2.0'])
  t.same(removed.sort(), ['0.1.0', 'runtimes/20.0.0'], 'pruning keeps the releases named and the runtimes they run on')
  t.ok((await lstat(join(dir, 'current'))).isSymbolicLink(), 'and the links')
})

await t.test('refused before anything is unpacked', async t => {
  await t.test('a release for another CPU', async t => {
    const dir = await releasesDir()
    const arm = await pack('0.2.1', { arch: 'arm64', nodeDir: runtime })
    await t.rejects(installRelease({ file: arm.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' }), { code: 'ERR_RELEASE_INCOMPATIBLE', message: /is for arm64; this node is x64/ })
    await untouched(t, dir, 'arm64 on x64')
  })
  await t.test('a release without the runtime it needs', async t => {
    const dir = await releasesDir()
    const lean = await pack('0.2.2')
    await t.rejects(installRelease({ file: lean.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' }), { code: 'ERR_RELEASE_INCOMPATIBLE', message: /Node 22\.23\.3, which this node does not hold/ })
    await untouched(t, dir, 'missing runtime')
  })
  await t.test('a tampered release', async t => {
    const dir = await releasesDir()
    const copy = join(root, 'tampered.zip')
    await writeFile(copy, await readFile(withNode.out))
    const fh = await open(copy, 'r+')
    const byte = Buffer.alloc(1)
    await fh.read(byte, 0, 1, 200)
    byte[0] = byte[0]! ^ 0xff
    await fh.write(byte, 0, 1, 200)
    await fh.close()
    await t.rejects(installRelease({ file: copy, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' }), { code: 'ERR_HASH_MISMATCH' })
    await untouched(t, dir, 'tampered')
  })
  await t.test('a release signed by another fleet, or by a key the fleet never certified', async t => {
    const dir = await releasesDir()
    const foreign = await pack('0.2.3', { signer: { key: other.privateKey }, nodeDir: runtime })
    await t.rejects(installRelease({ file: foreign.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' }), { code: 'ERR_BUNDLE_SIGNATURE' })
    const rogue = generateKeyPairSync('ed25519')
    const selfCert = await issuePublisherCert(rogue.privateKey, 'mallory', rogue.publicKey)
    const mallory = await pack('0.2.4', { signer: { key: rogue.privateKey, publisherCert: selfCert }, nodeDir: runtime })
    await t.rejects(installRelease({ file: mallory.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' }), { code: 'ERR_BUNDLE_SIGNATURE' })
    await untouched(t, dir, 'foreign signatures')
  })
  await t.test('a model bundle is no release, and a release no model', async t => {
    const dir = await releasesDir()
    await saveLayersModel(join(root, 'model'))
    const model = await buildBundle({ modelDir: join(root, 'model'), name: 'gatemesh', version: '0.2.5', signer: { key: fleet.privateKey }, out: join(root, 'model.zip'), validate: false, inputs: [{ name: 'hidden_input', dtype: 'float32', shape: [-1, 4] }], outputs: [{ name: 'probs', dtype: 'float32', shape: [-1, 3] }] })
    await t.rejects(installRelease({ file: model.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' }), { code: 'ERR_BUNDLE_SIGNATURE', message: /not gatemesh-release-manifest/ })
    await untouched(t, dir, 'model bundle')
    // (on its node_modules names already, before the signature)
    await t.rejects(verifyBundle(withNode.out, { fleetPublicKey: fleet.publicKey }), { code: /^ERR_(BUNDLE_SIGNATURE|INVALID_ENTRY_NAME)$/ }, 'a model reader refuses a release')
    t.equal((await verifyAnyBundle(model.out, { fleetPublicKey: fleet.publicKey })).kind, 'model')
  })
  await t.test('a release a publisher the fleet certified signed is taken', async t => {
    const dir = await releasesDir()
    const pub = generateKeyPairSync('ed25519')
    const cert = await issuePublisherCert(fleet.privateKey, 'ci', pub.publicKey)
    const signed = await pack('0.2.6', { signer: { key: pub.privateKey, publisherCert: cert }, nodeDir: runtime })
    const r = await installRelease({ file: signed.out, releasesDir: dir, fleetPublicKey: fleet.publicKey, arch: 'x64' })
    t.equal(r.info.publisher, 'ci')
  })
})

await t.test('manifests: bad ones are refused naming the field', async t => {
  const good = withNode.manifest
  const bytes = (m: unknown): Buffer => Buffer.from(JSON.stringify(m))
  t.throws(() => parseReleaseManifest(bytes({ ...good, version: 'latest' })), { code: 'ERR_RELEASE_MANIFEST', field: 'manifest.version' })
  t.throws(() => parseReleaseManifest(bytes({ ...good, files: [...good.files, { path: 'etc/passwd', size: 1, sha256: 'a'.repeat(64) }] })), { code: 'ERR_RELEASE_MANIFEST', message: /outside what a release carries/ })
  t.throws(() => parseReleaseManifest(bytes({ ...good, files: [...good.files, { path: 'app/../x', size: 1, sha256: 'a'.repeat(64) }] })), { code: 'ERR_RELEASE_MANIFEST' })
  t.throws(() => parseReleaseManifest(bytes({ ...good, node: { version: NODE, included: false } })), { code: 'ERR_RELEASE_MANIFEST', message: /runtime file, but manifest\.node\.included is false/ })
  t.throws(() => parseReleaseManifest(bytes({ ...good, files: good.files.filter(f => f.path !== 'app/gatemesh.mjs') })), { code: 'ERR_RELEASE_MANIFEST', message: /app\/gatemesh\.mjs is missing/ })
  t.throws(() => parseReleaseManifest(bytes({ ...good, extra: 1 })), { code: 'ERR_RELEASE_MANIFEST', field: 'manifest.extra' })
})
