import { execFile } from 'node:child_process'
import { access, constants } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/**
 * How action scripts are isolated on this machine, best first:
 *
 * - `user`: the agent runs as root. Each script runs as a separate
 *   unprivileged user, in its own PID, mount, network, IPC and UTS
 *   namespaces, with no capabilities.
 * - `userns`: the agent is not root, but unprivileged user namespaces work
 *   (Debian's default). The same namespaces, the script as an unprivileged
 *   root of its own user namespace with no capabilities; outside it, it is
 *   the agent's user, so the agent's files are hidden from it by the mount
 *   namespace and Node's permission model.
 * - `none`: neither works (namespaces disabled, util-linux missing). The
 *   script runs as the agent's user with Node's permission model and
 *   resource limits only: it can reach the network and signal the agent.
 */
export type IsolationMode = 'user' | 'userns' | 'none'

/** What is in force, for logs and `/v1/status`. */
export interface Isolation {
  mode: IsolationMode
  /** the user scripts run as (`user` mode) */
  user?: { name: string, uid: number, gid: number }
  namespaces: string[]
  /** address space (RLIMIT_AS), file size (RLIMIT_FSIZE), open files, processes */
  limits: string[]
  network: 'declared destinations only' | 'unrestricted'
  scratch: 'tmpfs quota' | 'file size limit and byte count'
  signals: 'own processes only' | 'any process of the agent\'s user'
  /** why a stronger mode is not in force */
  missing: string[]
}

export const TOOLS = ['unshare', 'setpriv', 'prlimit', 'timeout', 'ip', 'sh', 'cp', 'find', 'mount', 'env'] as const

/** Where each tool is, or what is missing. */
export async function findTools (path = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): Promise<{ found: Record<string, string>, missing: string[] }> {
  const dirs = [...new Set([...path.split(':'), '/usr/sbin', '/usr/bin', '/sbin', '/bin'])].filter(d => d.startsWith('/'))
  const found: Record<string, string> = {}
  const missing: string[] = []
  for (const tool of TOOLS) {
    let hit: string | undefined
    for (const dir of dirs) {
      const candidate = join(dir, tool)
      if (await access(candidate, constants.X_OK).then(() => true, () => false)) {
        hit = candidate
        break
      }
    }
    if (hit == null) missing.push(tool)
    else found[tool] = hit
  }
  return { found, missing }
}

/**
 * The script user: `name` if it exists, else created as a system user
 * (useradd, no home, no login shell); `nobody` when that fails.
 */
export async function scriptUser (name: string): Promise<{ user: { name: string, uid: number, gid: number }, note?: string }> {
  const lookup = async (n: string): Promise<{ name: string, uid: number, gid: number } | undefined> => {
    try {
      const { stdout } = await run('getent', ['passwd', n])
      const [, , uid, gid] = stdout.trim().split(':')
      return { name: n, uid: Number(uid), gid: Number(gid) }
    } catch {
      return undefined
    }
  }
  const existing = await lookup(name)
  if (existing != null && existing.uid !== 0 && existing.gid !== 0) return { user: existing }
  if (existing != null) return { user: await lookup('nobody') ?? { name: 'nobody', uid: 65534, gid: 65534 }, note: `config.scripts.user: "${name}" is root or in root's group; scripts run as nobody` }
  let reason = ''
  // another agent on this machine may be creating it at the same moment (useradd then fails, or finds /etc/passwd locked)
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await run('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--comment', 'gatemesh action scripts', name])
      const created = await lookup(name)
      if (created != null) return { user: created, note: `created the system user ${name} for action scripts` }
    } catch (err: any) {
      reason = String(err.stderr ?? err.message).trim()
    }
    const raced = await lookup(name)
    if (raced != null) return { user: raced }
    await new Promise(resolve => setTimeout(resolve, 200 + Math.random() * 300))
  }
  const note = `could not create the user ${name} (${reason}); scripts run as nobody`
  return { user: await lookup('nobody') ?? { name: 'nobody', uid: 65534, gid: 65534 }, note }
}

/**
 * Address space Node reserves before a script does anything (VmPeak of an
 * empty script, in MiB): V8 reserves its code range and heap cage up
 * front, ~750 MiB on x64, so RLIMIT_AS has to start from there.
 */
export async function nodeBaselineMb (execPath: string): Promise<number> {
  const { stdout } = await run(execPath, ['--permission', '--allow-fs-read=/proc/self/status', '--disable-warning=ExperimentalWarning', '-e', 'process.stdout.write(/VmPeak:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/status","utf8"))[1])'], { timeout: 60_000 })
  return Math.ceil(Number(stdout) / 1024)
}
