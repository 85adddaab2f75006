import { closeSync, openSync } from 'node:fs'
import { mkdir, open, readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import * as tar from 'tar'
import { CLI, type ClusterNode } from './cluster.ts'
import { run, start, type Teardown, type TestProcess } from './processes.ts'

/** `gatemesh image build ...` as a user runs it (stdout not a terminal: plain progress lines). */
export async function buildImageCli (args: string[]): Promise<{ stdout: string, stderr: string }> {
  return await run(process.execPath, [CLI, 'image', 'build', ...args], { timeoutMs: 10 * 60_000 })
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
 * systemd would run.
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

/**
 * Start the image's agent as the unit would, from `root`, with a bare
 * environment (nothing of this repository on PATH), optionally through an
 * emulator (`prefix`, e.g. qemu-aarch64-static -L SYSROOT). Started
 * through test/helpers/processes.ts: it never outlives the test (stopped
 * by `t`'s teardown when given, killed with its group on any way out).
 */
export async function startImageAgent (root: string, options: { prefix?: string[], log: string, t?: Teardown }): Promise<TestProcess> {
  const { argv, env } = await unitCommand(root)
  const command = [...(options.prefix ?? []), ...argv]
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
