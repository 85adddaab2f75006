import { closeSync, openSync } from 'node:fs'
import { chmod, mkdir, open, readFile, readdir, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as tar from 'tar'
import { CLI, type ClusterNode } from './cluster.ts'
import { run, start, type Teardown, type TestProcess } from './processes.ts'

/**
 * `gatemesh image build ...` as a user runs it (stdout not a terminal: plain
 * progress lines). On a busy machine a build takes many minutes (an arm64
 * one passed 10 at load ~20): the test file's own timeout is the bound.
 */
export async function buildImageCli (args: string[]): Promise<{ stdout: string, stderr: string }> {
  return await run(process.execPath, [CLI, 'image', 'build', ...args], { timeoutMs: 30 * 60_000 })
}

/** Unpack an image into an empty directory standing in for a device's root filesystem. */
export async function unpackImage (archive: string, root: string): Promise<void> {
  await mkdir(root, { recursive: true })
  await tar.x({ file: archive, cwd: root })
}

/** ELF e_machine of a file, read straight from its header (independent of the code under test). */
export async function elfMachine (file: string): Promise<number | undefined> {
  const fh = await open(file, 'r')
  try {
    const buf = Buffer.alloc(20)
    await fh.read(buf, 0, 20, 0)
    return buf.readUInt32BE(0) === 0x7f454c46 ? buf.readUInt16LE(18) : undefined
  } finally {
    await fh.close()
  }
}

export async function filesUnder (dir: string, suffix: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true })
  return entries.filter(e => e.isFile() && e.name.endsWith(suffix)).map(e => join(e.parentPath, e.name))
}

/**
 * The agent's command line and environment from the image's own systemd
 * unit, with device paths moved under `root`: the test runs exactly what
 * systemd would run (the image's loader, which starts the current release).
 */
export async function unitCommand (root: string): Promise<{ argv: string[], env: Record<string, string>, unit: string }> {
  const unit = await readFile(join(root, 'etc/systemd/system/gatemesh-agent.service'), 'utf8')
  const move = (s: string): string => s.replaceAll('/opt/gatemesh', join(root, 'opt/gatemesh')).replaceAll('/var/lib/gatemesh', join(root, 'var/lib/gatemesh'))
  const exec = /^ExecStart=(.+)$/m.exec(unit)?.[1]
  if (exec == null) throw new Error('the unit has no ExecStart')
  const env: Record<string, string> = {}
  for (const m of unit.matchAll(/^Environment=([A-Z_]+)=(.*)$/gm)) env[m[1]!] = m[2]!
  return { argv: exec.split(' ').map(move), env, unit }
}

/** The release an unpacked image's loader starts (`releases/current`), its directory, and the real path of the Node runtime it links to. */
export async function currentRelease (root: string): Promise<{ version: string, dir: string, node: string }> {
  const releases = join(root, 'opt/gatemesh/releases')
  const version = await readlink(join(releases, 'current'))
  const dir = join(releases, version)
  return { version, dir, node: await realpath(join(dir, 'node/bin/node')) }
}

const shQuote = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`

/**
 * An installation directory to hand the image's loader when the image's
 * Node is for another CPU: `releases/current` and the current release
 * mirror the image's (links to its app, node_modules, package.json and
 * release.json), and the release's runtime is a `bin/node` that runs the
 * image's own node binary under `emulator` (qemu-user cannot run the
 * loader, a shell script, and this kernel has no binfmt handler to start
 * an arm64 binary the loader execs). So the loader, the runtime, the app
 * and its modules are all the image's files: a broken one still fails.
 */
async function emulatedInstall (root: string, emulator: readonly string[], dir: string): Promise<string> {
  await rm(dir, { recursive: true, force: true })
  const release = await currentRelease(root)
  const info = JSON.parse(await readFile(join(release.dir, 'release.json'), 'utf8')) as { node: string }
  const releases = join(dir, 'releases')
  const runtime = join(releases, 'runtimes', info.node)
  await mkdir(join(runtime, 'bin'), { recursive: true })
  await writeFile(join(runtime, 'bin/node'), `#!/bin/sh\nexec ${[...emulator, release.node].map(shQuote).join(' ')} "$@"\n`)
  await chmod(join(runtime, 'bin/node'), 0o755)
  const mirror = join(releases, release.version)
  await mkdir(mirror, { recursive: true })
  for (const name of await readdir(release.dir)) {
    if (name !== 'node') await symlink(join(release.dir, name), join(mirror, name))
  }
  await symlink(`../runtimes/${info.node}`, join(mirror, 'node'))
  await symlink(release.version, join(releases, 'current'))
  return dir
}

/**
 * Start the image's agent as the unit would, from `root`, with a bare
 * environment (nothing of this repository on PATH): the unit's ExecStart,
 * the image's loader, which execs the current release's agent on the
 * release's own Node. `prefix` goes before the whole command (e.g.
 * `unshare ...`); `emulator` (e.g. qemu-aarch64-static -L SYSROOT) runs the
 * image's node binary when it is for another CPU (see emulatedInstall; its
 * scratch directory is `root`-emulated). Started through
 * test/helpers/processes.ts: it never outlives the test (stopped by `t`'s
 * teardown when given, killed with its group on any way out).
 */
export async function startImageAgent (root: string, options: { prefix?: string[], emulator?: string[], log: string, t?: Teardown }): Promise<TestProcess> {
  const { argv, env } = await unitCommand(root)
  const install = join(root, 'opt/gatemesh')
  if (options.emulator != null && !argv.includes(install)) throw new Error(`the unit's ExecStart does not hand the loader ${install}: ${argv.join(' ')}`)
  const emulated = options.emulator == null ? undefined : await emulatedInstall(root, options.emulator, `${root}-emulated`)
  const command = [...(options.prefix ?? []), ...argv.map(a => a === install && emulated != null ? emulated : a)]
  const out = openSync(options.log, 'a')
  try {
    return start(command[0]!, command.slice(1), {
      name: 'image agent',
      cwd: join(root, 'var/lib/gatemesh'),
      env: { PATH: '/usr/bin:/bin', ...env },
      bareEnv: true,
      stdio: ['ignore', out, out],
      t: options.t
    })
  } finally {
    closeSync(out)
  }
}

/** Resident set size of a process, in bytes. */
export async function rssBytes (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
  if (kb == null) throw new Error(`no VmRSS for ${pid}`)
  return Number(kb) * 1024
}

/** An unpacked image's node as a member of a test Cluster (it is started apart, on the image's own Node). */
export async function imageDevice (root: string, p2pPort: number, apiPort: number): Promise<ClusterNode> {
  const manifest = JSON.parse(await readFile(join(root, 'opt/gatemesh/image.json'), 'utf8'))
  return {
    name: 'device',
    dir: join(root, 'var/lib/gatemesh'),
    peerId: manifest.identity.peerId,
    p2pPort,
    apiPort,
    multiaddr: `/ip4/127.0.0.1/tcp/${p2pPort}/p2p/${String(manifest.identity.peerId)}`,
    api: `http://127.0.0.1:${apiPort}`
  }
}
