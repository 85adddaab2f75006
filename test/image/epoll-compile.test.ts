import { cp, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { REPO_ROOT } from '../../packaging/app-bundle.ts'
import { prepareToolchain } from '../../packaging/image/compile.ts'
import { collectPackages } from '../../packaging/image/dependencies.ts'
import { fitNativeModules } from '../../packaging/image/natives.ts'
import { fetchNodeRuntime } from '../../packaging/image/node-runtime.ts'
import { elfMachine } from '../helpers/image.ts'
import { exec } from '../helpers/processes.ts'

const work = await mkdtemp(join(tmpdir(), 'gatemesh-epoll-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })

/** A package's tree (onoff's: onoff, epoll, bindings, nan, ...) copied as the image build copies it. */
async function stage (dest: string, root = 'onoff'): Promise<Awaited<ReturnType<typeof collectPackages>>['packages']> {
  const { packages } = await collectPackages({ root: REPO_ROOT, roots: [root] })
  // dereference: the agent's own addon is installed as a link into packaging/native
  for (const pkg of packages) await cp(pkg.dir, join(dest, pkg.rel), { recursive: true, dereference: true, filter: src => !src.slice(pkg.dir.length).includes('node_modules') })
  return packages
}

for (const [arch, machine] of [['arm64', 0xb7], ['x64', 0x3e]] as const) {
  t.test(`epoll is compiled from source for ${arch} against the pinned Node's headers`, async t => {
    const nm = join(work, arch, 'node_modules')
    const packages = await stage(nm)
    const runtime = await fetchNodeRuntime({ arch })
    const toolchain = await prepareToolchain(runtime, arch)
    t.teardown(toolchain.dispose)
    const natives = await fitNativeModules(packages, nm, arch, async () => toolchain)
    t.same(natives, [{ package: 'epoll', version: packages.find(p => p.name === 'epoll')!.version, binaries: ['epoll/build/Release/epoll.node'], origin: 'compiled' }], 'epoll, compiled')
    t.equal(await elfMachine(join(nm, 'epoll/build/Release/epoll.node')), machine, `an ELF for ${arch} (e_machine 0x${machine.toString(16)})`)
    t.same(await readdir(join(nm, 'epoll/build')), ['Release'], 'object files and the Makefile are gone')
    t.same(await readdir(join(nm, 'epoll/build/Release')), ['epoll.node'])
    t.notOk((await readdir(join(nm, 'epoll/src'), { recursive: true }).catch(() => [])).some(f => f.endsWith('.cc')), 'C++ sources removed')
    if (arch === 'x64' && process.arch === 'x64') {
      // the pinned Node loads what was compiled for it, through onoff's own require chain
      const { stdout } = await exec(process.execPath, ['-e', "const { Epoll } = require('epoll'); const e = new Epoll(() => {}); e.close(); console.log(typeof require('onoff').Gpio)"], { cwd: join(nm, '..'), env: { ...process.env, NODE_PATH: nm } })
      t.equal(stdout.trim(), 'function', 'onoff loads with the compiled epoll')
    }
  })
}

for (const [arch, machine] of [['arm64', 0xb7], ['x64', 0x3e]] as const) {
  t.test(`the agent's malloc_trim addon is compiled from source for ${arch}`, async t => {
    const nm = join(work, `trim-${arch}`, 'node_modules')
    const packages = await stage(nm, '@gatemesh/malloc-trim')
    t.same(packages.map(p => p.name), ['@gatemesh/malloc-trim'], 'a package of its own, with no dependencies')
    const runtime = await fetchNodeRuntime({ arch })
    const toolchain = await prepareToolchain(runtime, arch)
    t.teardown(toolchain.dispose)
    const natives = await fitNativeModules(packages, nm, arch, async () => toolchain)
    const binary = '@gatemesh/malloc-trim/build/Release/malloc_trim.node'
    t.same(natives, [{ package: '@gatemesh/malloc-trim', version: '1.0.0', binaries: [binary], origin: 'compiled' }], 'compiled')
    t.equal(await elfMachine(join(nm, binary)), machine, `an ELF for ${arch} (e_machine 0x${machine.toString(16)})`)
    t.same(await readdir(join(nm, '@gatemesh/malloc-trim/build/Release')), ['malloc_trim.node'], 'only the binary is left of the build')
    t.notOk((await readdir(join(nm, '@gatemesh/malloc-trim/src'), { recursive: true }).catch(() => [])).some(f => f.endsWith('.c')), 'C sources removed')
    if (arch === process.arch) {
      const { stdout } = await exec(process.execPath, ['-e', "const m = require('@gatemesh/malloc-trim'); console.log(m.supported(), typeof m.trim())"], { cwd: join(nm, '..'), env: { ...process.env, NODE_PATH: nm } })
      t.equal(stdout.trim(), 'true boolean', 'the pinned Node loads it and it trims')
    }
  })
}

t.test('a missing cross compiler is named with the Debian package to install', async t => {
  const runtime = await fetchNodeRuntime({ arch: 'arm64' })
  const path = process.env.PATH
  process.env.PATH = join(work, 'empty-path')
  try {
    await t.rejects(prepareToolchain(runtime, process.arch === 'arm64' ? 'x64' : 'arm64'), { code: 'ERR_NATIVE_BUILD', message: /is not installed; install the cross compiler \(Debian: apt-get install g\+\+-/ })
  } finally {
    process.env.PATH = path
  }
})
