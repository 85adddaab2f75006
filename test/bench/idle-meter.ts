/**
 * What an idle member costs, measured the same way for any program: CPU
 * from /proc (the process and everything it started) and bytes from the
 * veth that joins the member's own network namespace to the bench's switch
 * (test/helpers/netns.ts). A member alone in its namespace sends and
 * receives everything through that one link, so its counters are that
 * member's traffic on the wire: Ethernet, IP and TCP/UDP headers included,
 * loopback traffic inside the namespace (the bench's own API probes) not.
 */
import { readdir, readFile } from 'node:fs/promises'
import { run } from '../helpers/processes.ts'
import type { NetLab } from '../helpers/netns.ts'

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ: 100 on every Linux architecture we ship to). */
let ticksPerSec: number | undefined
async function clockTicks (): Promise<number> {
  ticksPerSec ??= Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100
  return ticksPerSec
}

/** `own`: utime + stime; `reaped`: cutime + cstime, its children's once it reaped them (clock ticks). */
interface ProcStat { ppid: number, own: number, reaped: number }

async function procStat (pid: number): Promise<ProcStat | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  if (text == null) return undefined
  // the command name may hold spaces and parentheses: fields are counted after its last ')'
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17
  const field = (n: number): number => Number(rest[n - 3])
  return { ppid: field(4), own: field(14) + field(15), reaped: field(16) + field(17) }
}

/** CPU seconds one process used itself so far (utime + stime); throws when it is gone. */
export async function ownCpuSeconds (pid: number): Promise<number> {
  const s = await procStat(pid)
  if (s == null) throw new Error(`no /proc/${pid}/stat: the process is gone`)
  return s.own / await clockTicks()
}

/** CPU seconds used so far by each root pid and its live descendants (an agent's helpers count as the agent's). */
export async function cpuSeconds (roots: number[]): Promise<number[]> {
  const hz = await clockTicks()
  const pids = (await readdir('/proc')).filter(d => /^\d+$/.test(d)).map(Number)
  const stats = new Map<number, ProcStat>()
  await Promise.all(pids.map(async pid => {
    const s = await procStat(pid)
    if (s != null) stats.set(pid, s)
  }))
  const children = new Map<number, number[]>()
  for (const [pid, s] of stats) {
    const list = children.get(s.ppid)
    if (list == null) children.set(s.ppid, [pid])
    else list.push(pid)
  }
  return roots.map(root => {
    let ticks = 0
    const todo = [root]
    while (todo.length > 0) {
      const pid = todo.pop()!
      const s = stats.get(pid)
      ticks += s == null ? 0 : s.own + s.reaped
      todo.push(...(children.get(pid) ?? []))
    }
    return ticks / hz
  })
}

export interface LinkCounters {
  /** bytes the member sent (received by its switch port) */
  outBytes: number
  inBytes: number
  outPackets: number
  inPackets: number
}

/** Counters of every host's link, read on the switch side in one call: host i is port `p<i+1>`, and what the port receives the host sent. */
export async function linkCounters (lab: NetLab): Promise<LinkCounters[]> {
  const { stdout } = await run('ip', ['-n', lab.switch, '-s', '-j', 'link', 'show'], { timeoutMs: 30_000 })
  const links = JSON.parse(stdout) as Array<{ ifname: string, stats64?: { rx: { bytes: number, packets: number }, tx: { bytes: number, packets: number } } }>
  const byName = new Map(links.map(l => [l.ifname, l.stats64]))
  return lab.hosts.map((_, i) => {
    const s = byName.get(`p${i + 1}`)
    if (s == null) throw new Error(`switch port p${i + 1} has no counters in ${lab.switch}`)
    return { outBytes: s.rx.bytes, inBytes: s.tx.bytes, outPackets: s.rx.packets, inPackets: s.tx.packets }
  })
}

/**
 * Neither system measured here speaks IPv6, but new links do: router
 * solicitations and multicast listener reports, flooded by the bridge to
 * every port for tens of seconds, made the first point's receive counters
 * ~10 % higher than its send counters. Off on every link of the lab, then
 * a moment for the last to pass.
 */
export async function quietLinks (lab: NetLab): Promise<void> {
  for (const ns of [...lab.hosts, lab.switch]) {
    await run('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], { timeoutMs: 30_000 })
  }
  await new Promise(resolve => setTimeout(resolve, 2000))
}

export interface IdleSample {
  /** per member: % of one core over the window */
  cpuPct: number[]
  /** per member, per second of the window */
  bytesIn: number[]
  bytesOut: number[]
  packetsIn: number[]
  packetsOut: number[]
  seconds: number
}

/**
 * Sample CPU and link counters of `pids` (member i lives in `lab.hosts[i]`)
 * over `seconds` of idling. Nothing else is asked of the members meanwhile.
 */
export async function sampleIdle (lab: NetLab, pids: number[], seconds: number): Promise<IdleSample> {
  const read = async (): Promise<{ at: number, cpu: number[], links: LinkCounters[] }> => {
    const [cpu, links] = await Promise.all([cpuSeconds(pids), linkCounters(lab)])
    return { at: performance.now(), cpu, links }
  }
  const a = await read()
  await new Promise(resolve => setTimeout(resolve, seconds * 1000))
  const b = await read()
  const s = (b.at - a.at) / 1000
  const rate = (pick: (c: LinkCounters) => number): number[] => pids.map((_, i) => (pick(b.links[i]!) - pick(a.links[i]!)) / s)
  return {
    cpuPct: pids.map((_, i) => (b.cpu[i]! - a.cpu[i]!) / s * 100),
    bytesIn: rate(c => c.inBytes),
    bytesOut: rate(c => c.outBytes),
    packetsIn: rate(c => c.inPackets),
    packetsOut: rate(c => c.outPackets),
    seconds: s
  }
}

export const mean = (values: number[]): number => values.length === 0 ? NaN : values.reduce((a, b) => a + b, 0) / values.length
