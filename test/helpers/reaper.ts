/**
 * The watchdog of one test (or benchmark) process, started by
 * processes.ts the first time it starts a child. It outlives its parent on
 * purpose: when the parent is gone however it went (SIGKILL from tap's
 * timeout included), it ends everything the parent started.
 *
 *   node reaper.ts OWNER_TOKEN
 *
 * stdin: lines `+PGID` (a child's process group to watch) and `-PGID` (that
 * group ended), `+netns:NAME` and `-netns:NAME` (a network namespace the
 * parent created, and removed). The parent is gone when stdin closes or
 * this process is re-parented. Then it ends every process whose environment
 * carries GATEMESH_TEST_OWNER=OWNER_TOKEN and every watched group that still
 * holds one of them: SIGTERM, then SIGKILL after a grace period; and it
 * removes the namespaces still listed. It never touches
 * a process that does not carry the token (pids are reused quickly on a busy
 * machine, and other engineers' processes run beside ours).
 */
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'

const token = process.argv[2]
if (token == null || token === '') {
  console.error('usage: reaper.ts OWNER_TOKEN')
  process.exit(2)
}
const marker = `GATEMESH_TEST_OWNER=${token}`
const GRACE_MS = 3000
const parent = process.ppid
const groups = new Set<number>()
const namespaces = new Set<string>()

function read (file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

function carriesToken (pid: number): boolean {
  return read(`/proc/${pid}/environ`)?.split('\0').includes(marker) === true
}

/** Process group of a pid, from /proc/PID/stat (field 5, after the parenthesised command). */
function groupOf (pid: number): number | undefined {
  const stat = read(`/proc/${pid}/stat`)
  if (stat == null) return undefined
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[2])
}

/** Our processes now: those carrying the token, and every member of a watched group that holds one. */
function ours (): number[] {
  const pids = readdirSync('/proc').filter(d => /^\d+$/.test(d)).map(Number).filter(p => p !== process.pid)
  const marked = new Set(pids.filter(carriesToken))
  const liveGroups = new Set([...marked].map(groupOf).filter((g): g is number => g != null && groups.has(g)))
  for (const p of pids) {
    const g = groupOf(p)
    if (g != null && liveGroups.has(g)) marked.add(p)
  }
  return [...marked]
}

function signalAll (signal: NodeJS.Signals): number {
  const pids = ours()
  for (const pid of pids) {
    try {
      process.kill(pid, signal)
      // a stopped process handles SIGTERM only once it runs again
      if (signal === 'SIGTERM') process.kill(pid, 'SIGCONT')
    } catch {}
  }
  return pids.length
}

function done (): never {
  for (const ns of namespaces) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 5000 })
  process.exit(0)
}

let reaping = false
function reap (): void {
  if (reaping) return
  reaping = true
  if (signalAll('SIGTERM') === 0) done()
  const started = Date.now()
  const timer = setInterval(() => {
    if (ours().length === 0) done()
    if (Date.now() - started >= GRACE_MS) {
      signalAll('SIGKILL')
      clearInterval(timer)
      setTimeout(done, 200)
    }
  }, 100)
}

createInterface({ input: process.stdin })
  .on('line', line => {
    if (line.startsWith('+netns:')) namespaces.add(line.slice(7))
    else if (line.startsWith('-netns:')) namespaces.delete(line.slice(7))
    if (line.includes(':')) return
    const pgid = Number(line.slice(1))
    if (!Number.isInteger(pgid) || pgid <= 1) return
    if (line.startsWith('+')) groups.add(pgid)
    else groups.delete(pgid)
  })
  .on('close', reap)
// stdin may stay open if the parent's pipe leaked somewhere: re-parenting says the parent is gone too
setInterval(() => { if (process.ppid !== parent) reap() }, 500)
