import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { REPO_ROOT } from '../../packaging/app-bundle.ts'
import { readElfHeader, archOfElf } from '../../packaging/image/arch.ts'
import { collectPackages, type InstalledPackage } from '../../packaging/image/dependencies.ts'
import { checkBinaries, fitNativeModules } from '../../packaging/image/natives.ts'

/** No package here needs compiling: asking for a compiler is a bug. */
const noToolchain = async (): Promise<never> => { throw new Error('no package here should need a compiler') }

const work = await mkdtemp(join(tmpdir(), 'gatemesh-natives-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })

/** Copy an installed package into a scratch node_modules, as the image build does. */
async function stage (name: string, dest: string): Promise<InstalledPackage[]> {
  const { packages } = await collectPackages({ root: REPO_ROOT, roots: [name] })
  const pkg = packages.find(p => p.name === name)!
  await cp(pkg.dir, join(dest, pkg.rel), { recursive: true, filter: src => !src.slice(pkg.dir.length).includes('node_modules') })
  return [pkg]
}

/** A made-up package in `nm`. */
async function craft (nm: string, name: string, manifest: Record<string, unknown>, files: Record<string, string | Buffer> = {}): Promise<InstalledPackage> {
  const dir = join(nm, name)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', ...manifest }))
  for (const [f, body] of Object.entries(files)) {
    await mkdir(join(dir, f, '..'), { recursive: true })
    await writeFile(join(dir, f), body)
  }
  return { name, version: '1.0.0', dir, rel: name, manifest: { name, version: '1.0.0', ...manifest } }
}

function elf (machine: number): Buffer {
  const b = Buffer.alloc(64)
  b.writeUInt32BE(0x7f454c46, 0); b[4] = 2; b[5] = 1; b.writeUInt16LE(machine, 18)
  return b
}

t.test('ELF headers tell the architecture', async t => {
  t.equal(archOfElf((await readElfHeader(process.execPath))!), process.arch === 'arm64' ? 'arm64' : 'x64', 'this Node binary')
  t.equal(await readElfHeader(join(REPO_ROOT, 'package.json')), undefined, 'a text file is no ELF')
})

t.test('classic-level keeps exactly its prebuild for the target', async t => {
  for (const [arch, file] of [['arm64', 'classic-level.armv8.node'], ['x64', 'classic-level.node']] as const) {
    const nm = join(work, `cl-${arch}`)
    const packages = await stage('classic-level', nm)
    const natives = await fitNativeModules(packages, nm, arch, noToolchain)
    t.same(natives.map(n => n.binaries), [[`classic-level/prebuilds/linux-${arch}/${file}`]], `${arch}: ${file} only (no musl build)`)
    t.same(await readdir(join(nm, 'classic-level/prebuilds')), [`linux-${arch}`], `${arch}: other platforms removed`)
    t.notOk((await readdir(join(nm, 'classic-level'))).includes('deps'), `${arch}: LevelDB sources removed`)
  }
})

t.test('a native module without a prebuild for the target fails the build, naming it', async t => {
  const nm = join(work, 'crafted')
  const gyp = await craft(nm, 'needs-gyp', { gypfile: true }, { 'binding.gyp': '{}', 'index.js': '' })
  await t.rejects(fitNativeModules([gyp], nm, 'arm64', noToolchain), { code: 'ERR_NO_PREBUILD', package: 'needs-gyp', message: /native module without prebuilt binaries/ })
  const mac = await craft(nm, 'mac-only', {}, { 'prebuilds/darwin-x64+arm64/mac-only.node': elf(0xb7) })
  await t.rejects(fitNativeModules([mac], nm, 'arm64', noToolchain), { code: 'ERR_NO_PREBUILD', package: 'mac-only', message: /no prebuilt binary for linux-arm64/ })
  const musl = await craft(nm, 'musl-only', {}, { 'prebuilds/linux-arm64/musl-only.musl.node': elf(0xb7) })
  await t.rejects(fitNativeModules([musl], nm, 'arm64', noToolchain), { code: 'ERR_NO_PREBUILD', package: 'musl-only' }, 'a musl build cannot load on the official (glibc) Node')
  const cpu = await craft(nm, '@esbuild/linux-x64', { cpu: ['x64'], os: ['linux'] })
  await t.rejects(fitNativeModules([cpu], nm, 'arm64', noToolchain), { code: 'ERR_NO_PREBUILD', package: '@esbuild/linux-x64', message: /for cpu x64, not arm64/ })
  const lying = await craft(nm, 'lying', {}, { 'prebuilds/linux-arm64/lying.node': elf(0x3e) })
  await t.rejects(fitNativeModules([lying], nm, 'arm64', noToolchain), { code: 'ERR_WRONG_ARCH', message: /lying\.node is an ELF64 LE file for machine 0x3e \(x64\), not an arm64 binary/ }, 'every kept binary is checked')
  await t.resolves(checkBinaries(join(nm, 'mac-only'), 'arm64'), 'an arm64 binary passes the check')
})

t.test('the dependency closure follows Node\'s lookup, skips what is optional and absent, and omits on request', async t => {
  const root = join(work, 'project')
  const nm = join(root, 'node_modules')
  await craft(nm, 'app-dep', { dependencies: { shared: '1', nested: '1', left: '1' }, optionalDependencies: { 'not-installed': '1' } })
  await craft(nm, 'shared', {})
  await craft(nm, 'nested', { version: '1.0.0' })
  await craft(join(nm, 'app-dep', 'node_modules'), 'nested', {})
  await craft(nm, 'left', { dependencies: { 'only-for-left': '1' } })
  await craft(nm, 'only-for-left', {})
  await craft(nm, '@types/whatever', {})
  const { packages, omitted } = await collectPackages({ root, roots: ['app-dep'], optionalRoots: ['bufferutil'], omit: { left: 'not on devices' } })
  t.same(packages.map(p => p.rel), ['app-dep', 'app-dep/node_modules/nested', 'shared'], 'nested copies win over hoisted ones; omitted packages take their own dependencies with them')
  t.same(omitted, [{ name: 'left', reason: 'not on devices' }])
  await craft(nm, 'broken', { dependencies: { missing: '1' } })
  await t.rejects(collectPackages({ root, roots: ['broken'] }), { code: 'ERR_IMAGE', message: /missing \(needed by broken\) is not installed/ })
})
