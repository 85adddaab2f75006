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

/** onoff's tree (onoff, epoll, bindings, nan, ...) copied as the image build copies it. */
async function stage (dest: string): Promise<Awaited<ReturnType<typeof collectPackages>>['packages']> {
  const { packages } = await collectPackages({ root: REPO_ROOT, roots: ['onoff'] })
  for (const pkg of packages) await cp(pkg.dir, join(dest, pkg.rel), { recursive: true, filter: src => !src.slice(pkg.dir.length).includes('node_modules') })
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
