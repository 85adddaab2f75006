import { createInterface } from 'node:readline'
import { once } from 'node:events'
import t from 'tap'
import { cpuSeconds, linkCounters, quietLinks } from '../bench/idle-meter.ts'
import { NetLab } from '../helpers/netns.ts'
import { start } from '../helpers/processes.ts'

// test/bench/idle-meter.ts, which `scale --versus serf` measures both
// systems with: link counters belong to the right host and direction, and
// a member's CPU includes what it started.
const available = await NetLab.available()
if (!available.ok) {
  t.comment(`SKIP: network namespaces are not available here (${available.reason ?? 'ip netns add failed'})`)
  t.pass('idle meter test skipped: no network namespaces')
} else {
  await meterTest()
}

async function meterTest (): Promise<void> {
  const lab = await NetLab.create(2)
  t.teardown(async () => { await lab.destroy() })
  await quietLinks(lab)
  const to = lab.address(1)
  const receiver = start('ip', ['netns', 'exec', lab.hosts[1]!, process.execPath, '-e',
    `const s = require('node:dgram').createSocket('udp4'); s.bind(9999, ${JSON.stringify(to)}, () => console.log('ready'))`], { name: 'udp receiver', stdio: ['ignore', 'pipe', 'inherit'], ref: true, t })
  await once(createInterface({ input: receiver.child.stdout! }), 'line')

  // the sender runs under a shell, so its CPU is a descendant's: it burns 0.3 s of CPU, then sends 200 datagrams of 1000 bytes
  const DATAGRAMS = 200
  const sender = `const s = require('node:dgram').createSocket('udp4')
const t0 = process.cpuUsage()
for (;;) { const u = process.cpuUsage(t0); if (u.user + u.system >= 300000) break }
const buf = Buffer.alloc(1000)
let n = 0
const next = () => {
  if (n === ${DATAGRAMS}) { const u = process.cpuUsage(); console.log(JSON.stringify({ cpu: (u.user + u.system) / 1e6 })); setInterval(() => {}, 60000); return }
  s.send(buf, 9999, ${JSON.stringify(to)}, () => { n++; setTimeout(next, 2) })
}
next()`
  const before = await linkCounters(lab)
  const shell = start('ip', ['netns', 'exec', lab.hosts[0]!, 'sh', '-c', `"${process.execPath}" -e "$SENDER"; true`], { name: 'udp sender', env: { SENDER: sender }, stdio: ['ignore', 'pipe', 'inherit'], ref: true, t })
  const [line] = await once(createInterface({ input: shell.child.stdout! }), 'line') as [string]
  const used = (JSON.parse(line) as { cpu: number }).cpu
  const [cpu] = await cpuSeconds([shell.pid!])
  const after = await linkCounters(lab)

  // Ethernet 14 + IPv4 20 + UDP 8 around each 1000-byte payload; ARP and nothing else besides
  const wire = DATAGRAMS * (1000 + 14 + 20 + 8)
  const delta = (i: number, k: 'outBytes' | 'inBytes'): number => after[i]![k] - before[i]![k]
  t.ok(delta(0, 'outBytes') >= wire && delta(0, 'outBytes') < wire + 1000, `host 0 sent its datagrams: ${delta(0, 'outBytes')} bytes out, ${wire} on the wire`)
  t.ok(delta(1, 'inBytes') >= wire && delta(1, 'inBytes') < wire + 1000, `host 1 received them: ${delta(1, 'inBytes')} bytes in`)
  t.ok(delta(0, 'inBytes') < 1000, `host 0 received little (ARP): ${delta(0, 'inBytes')} bytes`)
  t.ok(delta(1, 'outBytes') < 1000, `host 1 sent little (ARP): ${delta(1, 'outBytes')} bytes`)
  // /proc gives user and system time each in whole 10 ms ticks (rounded down); the shell adds its own
  t.ok(cpu! >= used - 0.03, `the shell's CPU includes its child's: ${cpu!.toFixed(2)} s counted, the child used ${used.toFixed(2)} s`)
  t.ok(cpu! < used + 1, `and not much more: ${cpu!.toFixed(2)} s`)
}
