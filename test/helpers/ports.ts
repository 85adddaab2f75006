import { chmod, mkdir, rmdir, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { freePort as unreservedPort } from '../../node/cli/ports.ts'

/**
 * Where tests and benchmarks on this machine note the ports they picked.
 * Fixed, not under TMPDIR: `test/loop.sh` gives every run its own TMPDIR,
 * and a CI run, a loop and a benchmark side by side must all see one list.
 */
const RESERVED = '/tmp/gatemesh-ports'
/** Longer than any test file may run (tap's timeout, 1800 s for the emulated image tests). */
const HOLD_MS = 40 * 60_000

/**
 * A free port on `host` that no other test or benchmark process on this
 * machine picked in the last 40 minutes. A port that is merely free now is
 * not enough: between the pick and the agent binding it (seconds, when it
 * starts from sources or under a CPU hog), or while a test restarts an
 * agent on its old port, another test process picking at random could take
 * it, and the agent fails with EADDRINUSE (seen with a CI run and a test
 * loop side by side).
 */
export async function freePort (host = '127.0.0.1'): Promise<number> {
  // sticky and world-writable, like /tmp, whoever made it first (mkdir's mode passes through the umask)
  await mkdir(RESERVED, { recursive: true }).then(async made => { if (made != null) await chmod(RESERVED, 0o1777) })
  for (let i = 0; i < 100; i++) {
    const port = await unreservedPort(host)
    if (await reserve(port)) return port
  }
  throw new Error(`no port free and unreserved on ${host} after 100 picks (reservations in ${RESERVED})`)
}

export async function reserve (port: number): Promise<boolean> {
  const file = join(RESERVED, String(port))
  try {
    await writeFile(file, `${process.pid}\n`, { flag: 'wx' })
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // the list belongs to another user (or the disk is read-only): a port free now is the best we have
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return true
    if (code !== 'EEXIST') throw err
  }
  if (!await stale(file)) return false
  // An old reservation: its test is long over. Taking it over is exclusive:
  // two picks can get one port from the kernel (each binds port 0 and closes
  // it), and when both overwrote an old reservation both got the port
  // (test/unit/ports.test.ts, twice in 20 CI runs). Whoever makes the lock
  // looks again, so a pick that saw the old file after another took it over
  // finds it fresh. (Another user's file we cannot take over: another port.)
  const lock = `${file}.takeover`
  if (!await mkdir(lock).then(() => true, () => false)) return false
  try {
    if (!await stale(file)) return false
    return await writeFile(file, `${process.pid}\n`).then(() => true, () => false)
  } finally {
    await rmdir(lock).catch(() => {})
  }
}

/** Whether `file`'s reservation is older than the hold (or gone). */
async function stale (file: string): Promise<boolean> {
  const noted = await stat(file).then(s => s.mtimeMs, () => 0)
  return Date.now() - noted >= HOLD_MS
}
