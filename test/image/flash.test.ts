import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tar from 'tar'
import t from 'tap'
import { initFleet } from '../../node/identity/fleet.ts'
import { flashRoot, inspectImage } from '../../packaging/image/flash.ts'
import { remoteInstallScript } from '../../packaging/image/ssh.ts'
import { CLI } from '../helpers/cluster.ts'
import { budget, calibrate } from '../helpers/budget.ts'
import { buildImageCli } from '../helpers/image.ts'
import { exec } from '../helpers/processes.ts'

const work = await mkdtemp(join(tmpdir(), 'gatemesh-flash-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })
const fleet = join(work, 'fleet')
await initFleet(fleet)
const archive = join(work, 'gatemesh-x64.tar.gz')
await calibrate()
await buildImageCli(['--arch', 'x64', '--fleet', fleet, '--out', archive, '--labels', 'site=lab'])

/** A scratch directory that looks like a Debian root: os-release, usr/, and a real x86-64 /usr/bin/env. */
async function fakeRoot (name: string, options: { osRelease?: boolean, usr?: boolean, env?: 'x64' | 'arm64' } = {}): Promise<string> {
  const root = join(work, name)
  await mkdir(join(root, 'etc'), { recursive: true })
  if (options.osRelease !== false) await writeFile(join(root, 'etc/os-release'), 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
  if (options.usr !== false) {
    await mkdir(join(root, 'usr/bin'), { recursive: true })
    await mkdir(join(root, 'usr/local/bin'), { recursive: true })
    // merged /usr, as on Raspberry Pi OS: /bin is a link into usr
    await symlink('usr/bin', join(root, 'bin'))
    if (options.env === 'arm64') {
      // just an ELF header for AArch64 (e_machine 0xB7): enough to tell what the root is built for
      const header = Buffer.alloc(64)
      header.writeUInt32BE(0x7f454c46, 0); header[4] = 2; header[5] = 1; header[6] = 1; header.writeUInt16LE(2, 16); header.writeUInt16LE(0xb7, 18)
      await writeFile(join(root, 'usr/bin/env'), header, { mode: 0o755 })
    } else if (options.env === 'x64') {
      await copyFile('/usr/bin/env', join(root, 'usr/bin/env'))
    }
  }
  return root
}

async function flashCli (root: string): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    // unpacking a whole release (thousands of files) and removing the old one: minutes on a busy machine
    const { stdout, stderr } = await exec(process.execPath, [CLI, 'flash', archive, '--root', root], { timeout: budget(120_000) })
    return { code: 0, stdout, stderr }
  } catch (err: any) {
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

const root = await fakeRoot('rootfs', { env: 'x64' })

await t.test('flash --root installs the expected tree and enables the unit', async t => {
  const { code, stdout } = await flashCli(root)
  t.equal(code, 0)
  t.match(stdout, /installed gatemesh \S+ \(x64\) in .*rootfs; the agent starts on the next boot as 12D3KooW/)
  const { manifest } = await inspectImage(archive)
  const release = `opt/gatemesh/releases/${manifest.release!.version}`
  t.equal(await readlink(join(root, 'opt/gatemesh/releases/current')), manifest.release!.version, 'releases/current is the image\'s release')
  t.equal(await readlink(join(root, release, 'node')), `../runtimes/${manifest.node.version}`, 'which runs on the image\'s runtime')
  for (const f of [`${release}/node/bin/node`, `${release}/app/gatemesh.mjs`, `${release}/app/gatemesh-worker.mjs`, `${release}/package.json`, `${release}/release.json`,
    'opt/gatemesh/current/app/gatemesh.mjs', 'opt/gatemesh/bin/gatemesh-loader',
    'opt/gatemesh/image.json', 'opt/gatemesh/bin/gatemesh', 'opt/gatemesh/lib/sysusers.d/gatemesh.conf', `${release}/node_modules/classic-level/package.json`,
    'etc/systemd/system/gatemesh-agent.service', 'etc/systemd/system/gatemesh-setup.service',
    'var/lib/gatemesh/config.json', 'var/lib/gatemesh/node.cert', 'var/lib/gatemesh/fleet.pub']) {
    t.ok((await stat(join(root, f))).isFile(), f)
  }
  t.equal(await readlink(join(root, 'etc/systemd/system/multi-user.target.wants/gatemesh-agent.service')), '/etc/systemd/system/gatemesh-agent.service', 'multi-user.target.wants link, as systemctl enable makes it')
  t.equal(await readlink(join(root, 'usr/local/bin/gatemesh')), '/opt/gatemesh/bin/gatemesh', 'the CLI on PATH')
  for (const f of ['peer.key', 'network.key']) t.equal((await stat(join(root, 'var/lib/gatemesh', f))).mode & 0o777, 0o600, `${f} is 0600`)
  t.equal((await stat(join(root, 'var/lib/gatemesh'))).mode & 0o777, 0o700)
  t.same((await readdir(join(root, 'opt'))), ['gatemesh'], 'no staging directories left behind')
  const unit = await readFile(join(root, 'etc/systemd/system/gatemesh-agent.service'), 'utf8')
  t.match(unit, /^ExecStart=\/opt\/gatemesh\/bin\/gatemesh-loader \/opt\/gatemesh \/var\/lib\/gatemesh$/m, 'the unit runs the image\'s loader')
  const loader = await readFile(join(root, 'opt/gatemesh/bin/gatemesh-loader'), 'utf8')
  t.match(loader, /^ {2}exec "\$dir\/node\/bin\/node" --max-semi-space-size=1 --optimize-for-size "\$dir\/app\/gatemesh\.mjs" agent --data "\$data"$/m, 'which runs the agent on the current release\'s node with AGENT_NODE_FLAGS')
  t.match(unit, /^User=gatemesh$/m)
  t.match(unit, /^StateDirectory=gatemesh$/m)
  t.match(unit, /^Restart=on-failure$/m)
  t.match(unit, /^WantedBy=multi-user.target$/m)
})

await t.test('systemd accepts the units and creates the service user from the image\'s sysusers file', async t => {
  // verify needs the ExecStart binaries to exist on this machine: point the copies at the flashed root
  const verifyDir = join(work, 'verify')
  await mkdir(verifyDir)
  for (const u of ['gatemesh-agent.service', 'gatemesh-setup.service']) {
    const text = await readFile(join(root, 'etc/systemd/system', u), 'utf8')
    await writeFile(join(verifyDir, u), text.replaceAll('/opt/gatemesh', join(root, 'opt/gatemesh')))
  }
  const verify = await exec('systemd-analyze', ['verify', join(verifyDir, 'gatemesh-agent.service'), join(verifyDir, 'gatemesh-setup.service')])
  t.equal(verify.stderr + verify.stdout, '', 'systemd-analyze verify has nothing to say')
  await exec('systemd-sysusers', [`--root=${root}`, join(root, 'opt/gatemesh/lib/sysusers.d/gatemesh.conf')])
  const passwd = await readFile(join(root, 'etc/passwd'), 'utf8')
  t.match(passwd, /^gatemesh:x:\d+:\d+:gatemesh agent:\/var\/lib\/gatemesh:\/usr\/sbin\/nologin$/m, 'a system user with its home in the data dir and no shell')
  const group = await readFile(join(root, 'etc/group'), 'utf8')
  t.match(group, /^dialout:x:\d+:gatemesh$/m, 'in dialout for serial sensors')
  t.match(group, /^gpio:x:\d+:gatemesh$/m, 'in gpio')
})

await t.test('flashing again upgrades /opt/gatemesh as a whole and keeps the node directory', async t => {
  await writeFile(join(root, 'opt/gatemesh/stale-file'), 'from an older version')
  const cert = await readFile(join(root, 'var/lib/gatemesh/node.cert'), 'utf8')
  await writeFile(join(root, 'var/lib/gatemesh/config.json'), (await readFile(join(root, 'var/lib/gatemesh/config.json'), 'utf8')).replace('"site": "lab"', '"site": "edited"'))
  const { code, stdout } = await flashCli(root)
  t.equal(code, 0)
  t.match(stdout, /upgraded gatemesh .* with the node directory already there/)
  await t.rejects(stat(join(root, 'opt/gatemesh/stale-file')), 'nothing of the old version is left')
  t.equal(await readFile(join(root, 'var/lib/gatemesh/node.cert'), 'utf8'), cert, 'same certificate')
  t.match(await readFile(join(root, 'var/lib/gatemesh/config.json'), 'utf8'), /"site": "edited"/, 'the operator\'s config edits survive')
})

await t.test('flashing over an installation from before releases (app and runtime straight in /opt/gatemesh) leaves only the release layout', async t => {
  const old = await fakeRoot('flat-rootfs', { env: 'x64' })
  const opt = join(old, 'opt/gatemesh')
  for (const dir of ['node/bin', 'app', 'node_modules/classic-level', 'bin']) await mkdir(join(opt, dir), { recursive: true })
  await copyFile('/usr/bin/env', join(opt, 'node/bin/node'))
  await writeFile(join(opt, 'app/gatemesh.mjs'), 'console.log("the old agent")\n')
  await writeFile(join(opt, 'node_modules/classic-level/package.json'), '{}\n')
  await writeFile(join(opt, 'image.json'), JSON.stringify({ format: 1, name: 'gatemesh', version: '0.0.9', arch: 'x64' }))
  await mkdir(join(old, 'etc/systemd/system'), { recursive: true })
  await writeFile(join(old, 'etc/systemd/system/gatemesh-agent.service'), '[Service]\nExecStart=/opt/gatemesh/node/bin/node /opt/gatemesh/app/gatemesh.mjs agent --data /var/lib/gatemesh\n')
  const { code, stdout } = await flashCli(old)
  t.equal(code, 0)
  t.match(stdout, /\(replacing an installation from before releases\)/, 'it says what it replaces')
  t.match(stdout, /upgraded gatemesh/)
  for (const gone of ['node', 'app', 'node_modules']) await t.rejects(stat(join(opt, gone)), `no ${gone}/ of the old layout is left`)
  t.ok((await stat(join(opt, 'current/app/gatemesh.mjs'))).isFile(), 'the image\'s release is current')
  t.match(await readFile(join(old, 'etc/systemd/system/gatemesh-agent.service'), 'utf8'), /^ExecStart=\/opt\/gatemesh\/bin\/gatemesh-loader /m, 'the unit now runs the loader')
})

await t.test('refuses a directory that is not a Linux root, writing nothing', async t => {
  const cases: Array<[string, Promise<string>, RegExp]> = [
    ['no os-release', fakeRoot('no-os-release', { osRelease: false }), /does not look like a Linux root filesystem \(no etc\/os-release\)/],
    ['no usr/', fakeRoot('no-usr', { usr: false }), /no usr\//],
    ['missing', Promise.resolve(join(work, 'does-not-exist')), /not a directory/]
  ]
  for (const [what, dirP, message] of cases) {
    const dir = await dirP
    const { code, stderr } = await flashCli(dir)
    t.equal(code, 1, `${what}: exit 1`)
    t.match(stderr, message, `${what}: ${stderr.trim()}`)
    await t.rejects(stat(join(dir, 'opt')), `${what}: nothing written`)
  }
  await t.rejects(flashRoot({ archive, root: await fakeRoot('arm-root', { env: 'arm64' }) }), { code: 'ERR_FLASH_TARGET', message: /usr\/bin\/env is an ELF64 LE file for machine 0xb7 \(arm64\); this image is for x64/ }, 'an x64 image into an arm64 root')
})

await t.test('refuses archives that are not gatemesh images or write elsewhere', async t => {
  const src = join(work, 'evil')
  await mkdir(join(src, 'opt/gatemesh'), { recursive: true })
  await mkdir(join(src, 'etc'), { recursive: true })
  await writeFile(join(src, 'opt/gatemesh/image.json'), JSON.stringify((await inspectImage(archive)).manifest))
  await writeFile(join(src, 'etc/passwd'), 'root::0:0::/root:/bin/sh\n')
  const evil = join(work, 'evil.tar.gz')
  await tar.c({ file: evil, cwd: src, gzip: true }, ['opt', 'etc'])
  await t.rejects(flashRoot({ archive: evil, root: await fakeRoot('evil-root') }), { code: 'ERR_IMAGE_ARCHIVE', entry: 'etc/passwd' }, 'an entry outside the image\'s paths')

  await rm(join(src, 'etc/passwd'))
  await symlink('/etc/shadow', join(src, 'opt/gatemesh/link'))
  await tar.c({ file: evil, cwd: src, gzip: true }, ['opt'])
  await t.rejects(inspectImage(evil), { code: 'ERR_IMAGE_ARCHIVE', entry: 'opt/gatemesh/link' }, 'a symbolic link')

  const plain = join(work, 'plain.tar.gz')
  await rm(join(src, 'opt/gatemesh'), { recursive: true })
  await mkdir(join(src, 'opt/gatemesh'), { recursive: true })
  await writeFile(join(src, 'opt/gatemesh/readme'), 'hello')
  await tar.c({ file: plain, cwd: src, gzip: true }, ['opt'])
  await t.rejects(inspectImage(plain), { code: 'ERR_IMAGE_ARCHIVE', message: /has no opt\/gatemesh\/image\.json/ }, 'an archive without a manifest')
  await writeFile(join(work, 'junk.tar.gz'), 'not a tarball at all')
  await t.rejects(inspectImage(join(work, 'junk.tar.gz')), { code: 'ERR_IMAGE_ARCHIVE' }, 'junk')
})

t.test('the ssh installer script is valid sh and checks the CPU before anything else', async t => {
  const { manifest } = await inspectImage(archive)
  const script = remoteInstallScript("/tmp/gatemesh-image.it's", manifest)
  const file = join(work, 'install.sh')
  await writeFile(file, script)
  await t.resolves(exec('sh', ['-n', file]), 'sh -n accepts it (quoting included)')
  t.match(script, /if \[ "\$\(uname -m\)" != 'x86_64' \]; then .*exit 3; fi\ntar -xzf/, 'uname -m is checked before unpacking')
  t.match(script, /flash "\$f" --root \/\n/, 'the image\'s own CLI flashes the running root')
})
