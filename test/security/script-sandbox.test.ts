import { createServer as createTcpServer, type Server } from 'node:net'
import { createSocket } from 'node:dgram'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { runScript } from '../../node/actions/script.ts'
import { Sandbox } from '../../node/actions/sandbox/sandbox.ts'
import type { IsolationMode } from '../../node/actions/sandbox/probe.ts'

// Issue 14: "an action script: process.kill(process.ppid) kills its agent;
// TCP/UDP allowed (the agent's own API included); 1.5 GiB of Buffers past
// the heap cap; scratch fills the disk". Real scripts in the real sandbox:
// as another user when this test runs as root, and in a user namespace as
// the agent would run without root. This process stands in for the agent.

const root = await mkdtemp(join(tmpdir(), 'gatemesh-sandbox-test-'))
const servers: Server[] = []
t.teardown(async () => {
  for (const s of servers) s.close()
  await rm(root, { recursive: true, force: true })
})
const log = { info: () => {}, warn: () => {}, error: () => {} }
const bundle = join(root, 'bundle')
await mkdir(bundle, { mode: 0o755 })
const script = join(bundle, 'action.js')
// one script, many misdeeds: argv[2] says which; it reports what happened as one JSON line
await writeFile(script, `
const fs = require('node:fs')
const net = require('node:net')
let input = ''
process.stdin.on('data', d => { input += d })
process.stdin.on('end', async () => {
  const e = JSON.parse(input)
  const report = r => console.log(JSON.stringify(r))
  const tryConnect = (host, port) => new Promise(resolve => {
    const s = net.connect({ host, port, timeout: 3000 })
    s.once('connect', () => { s.write('ping\\n'); s.once('data', d => { s.destroy(); resolve('echo:' + String(d).trim()) }); s.once('close', () => resolve('closed')) })
    s.once('timeout', () => { s.destroy(); resolve('timeout') })
    s.once('error', err => resolve(err.code))
  })
  switch (process.argv[2]) {
    case 'kill': {
      // each result is reported at once: a kill that works may end the sandbox before the next line
      const out = {}
      for (const [name, pid] of [['agent', e.agentPid], ['init', 1], ['everyone', -1], ['parent', process.ppid]]) {
        try { process.kill(pid, 'SIGKILL'); out[name] = 'sent' } catch (err) { out[name] = err.code }
        report(out)
      }
      break
    }
    case 'net': {
      const out = {}
      for (const [name, host, port] of e.targets) out[name] = await tryConnect(host, port)
      out.udp = await new Promise(resolve => {
        const u = require('node:dgram').createSocket('udp4')
        u.once('error', err => { u.close(); resolve(err.code) })
        // outside first (no route), then this host's loopback port, which inside is the sandbox's own
        u.send('x', e.udpPort, '192.0.2.1', err => {
          const outside = err ? err.code : 'sent'
          u.send('x', e.udpPort, '127.0.0.1', err2 => { u.close(); resolve(outside + '/' + (err2 ? err2.code : 'sent')) })
        })
      })
      out.dns = await require('node:dns').promises.lookup('example.com').then(() => 'resolved', err => err.code)
      report(out)
      break
    }
    case 'buffers': {
      const held = []
      let error = null
      try { for (let i = 0; i < e.chunks; i++) held.push(Buffer.alloc(64 * 1024 * 1024, 1)) } catch (err) { error = err.message }
      report({ mib: held.length * 64, error })
      break
    }
    case 'fill': {
      let bytes = 0
      let error = null
      const chunk = Buffer.alloc(1024 * 1024, 7)
      try { for (let i = 0; ; i++) { fs.writeFileSync('fill-' + i, chunk); bytes += chunk.length } } catch (err) { error = err.code }
      report({ bytes, error })
      break
    }
    case 'count': {
      const n = fs.existsSync('counter') ? Number(fs.readFileSync('counter', 'utf8')) + 1 : 1
      fs.writeFileSync('counter', String(n))
      report({ n, files: fs.readdirSync('.').sort() })
      break
    }
  }
})
`, { mode: 0o644 })

const sandboxes = new Map<IsolationMode, Sandbox>()
const modes: IsolationMode[] = process.getuid?.() === 0 ? ['user', 'userns'] : ['userns']
for (const mode of modes) {
  const sandbox = await Sandbox.create({ mode, runDir: join(root, `runs-${mode}`), hide: [], apiPort: 1 }, log)
  sandboxes.set(mode, sandbox)
}

async function run (sandbox: Sandbox, what: string, input: Record<string, unknown>, options: { scratch?: string, network?: string[], scratchBytes?: number, maxMemoryMb?: number } = {}): Promise<{ report: any, error?: any }> {
  const lines: string[] = []
  const logger = { info: (o: { line?: string }) => { if (o.line != null) lines.push(o.line) }, warn: () => {} }
  let error: any
  await runScript({ path: script, scratch: options.scratch ?? join(root, 'scratch', what), input, args: [what], timeoutMs: 20_000, maxMemoryMb: options.maxMemoryMb ?? 64, scratchBytes: options.scratchBytes ?? 16 * 1024 * 1024, network: options.network ?? [], logger, sandbox }).catch((err: unknown) => { error = err })
  const last = lines.findLast(l => l.startsWith('{'))
  return { report: last == null ? undefined : JSON.parse(last), error }
}

/** A TCP server on 127.0.0.1 answering "pong", counting connections. */
async function tcpServer (): Promise<{ port: number, connections: () => number }> {
  let count = 0
  const server = createTcpServer(s => { count++; s.on('data', () => { s.end('pong\n') }) })
  servers.push(server)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, connections: () => count }
}

for (const [mode, sandbox] of sandboxes) {
  t.test(`${mode}: the isolation in force says what it is`, async t => {
    t.equal(sandbox.isolation.mode, mode, `probed: ${JSON.stringify(sandbox.isolation.missing)}`)
    t.equal(sandbox.isolation.network, 'declared destinations only')
    t.equal(sandbox.isolation.signals, 'own processes only')
    t.ok(sandbox.isolation.namespaces.includes('pid') && sandbox.isolation.namespaces.includes('network'))
    if (mode === 'user') t.not(sandbox.isolation.user?.uid, 0, `scripts run as ${sandbox.isolation.user?.name}`)
  })

  t.test(`${mode}: process.kill(process.ppid) and friends reach nothing outside`, async t => {
    const { report, error } = await run(sandbox, 'kill', { agentPid: process.pid })
    t.ok(report?.agent != null, 'the script tried')
    t.pass(`what the script's kills did: ${JSON.stringify(report)}; the run ${error == null ? 'succeeded' : `failed: ${String(error.message)}`}`)
    if (mode === 'user') t.match(report, { init: 'EPERM', parent: 'EPERM' }, 'as another user it may signal nothing it did not start')
    // this process (the agent's stand-in) and the test runner are alive: we are still here to say so
    t.doesNotThrow(() => process.kill(process.pid, 0), 'the agent is alive')
    t.doesNotThrow(() => process.kill(process.ppid, 0), 'and so is its parent')
  })

  t.test(`${mode}: sockets reach declared destinations only`, async t => {
    const declared = await tcpServer()
    const api = await tcpServer()
    const other = await tcpServer()
    const sb = await Sandbox.create({ mode: mode as IsolationMode, runDir: join(root, `runs-api-${mode}`), apiPort: api.port }, log)
    const udp = createSocket('udp4')
    let datagrams = 0
    udp.on('message', () => { datagrams++ })
    await new Promise<void>(resolve => udp.bind(0, '127.0.0.1', resolve))
    t.teardown(() => { udp.close() })
    const { report, error } = await run(sb, 'net', {
      targets: [['declared', '127.0.0.1', declared.port], ['byName', 'localhost', declared.port], ['undeclared', '127.0.0.1', other.port], ['agentApi', '127.0.0.1', api.port], ['internet', '192.0.2.1', 80]],
      udpPort: udp.address().port
    }, { network: [`127.0.0.1:${declared.port}`, `127.0.0.1:${api.port}`] })
    t.equal(error, undefined, String(error?.message ?? ''))
    t.equal(report.declared, 'echo:pong', 'a declared destination works, end to end')
    t.equal(report.byName, 'echo:pong', 'and by the name it was declared under (localhost)')
    t.equal(report.undeclared, 'ECONNREFUSED', 'an undeclared port on the same host does not')
    t.equal(other.connections(), 0, 'nothing reached it')
    t.not(report.agentApi, 'echo:pong', `the agent's own API, even when declared: ${String(report.agentApi)}`)
    t.equal(api.connections(), 1, 'the proxy connected once and hung up at once')
    t.match(report.internet, /ENETUNREACH|EHOSTUNREACH|ECONNREFUSED|timeout/, `anything else: ${String(report.internet)}`)
    t.not(report.udp, undefined)
    t.equal(datagrams, 0, `no UDP datagram left the sandbox (${String(report.udp)})`)
    t.not(report.dns, 'resolved', `no DNS (${String(report.dns)})`)
  })

  t.test(`${mode}: 1.5 GiB of Buffers fails; what the limit allows works`, async t => {
    const big = await run(sandbox, 'buffers', { chunks: 24 })
    t.ok(big.report == null || big.report.error != null, `1.5 GiB refused: ${JSON.stringify(big.report ?? big.error?.message)}`)
    t.ok((big.report?.mib ?? 0) < 1536, `held at most ${big.report?.mib ?? 0} MiB`)
    const small = await run(sandbox, 'buffers', { chunks: 1 })
    t.same(small.report, { mib: 64, error: null }, '64 MiB of Buffers with a 64 MiB heap cap is fine')
  })

  t.test(`${mode}: filling the scratch directory stops at its quota, and the scratch persists`, async t => {
    const scratch = join(root, `fill-${mode}`)
    const quota = 8 * 1024 * 1024
    const first = await run(sandbox, 'count', {}, { scratch, scratchBytes: quota })
    t.equal(first.report?.n, 1)
    const fill = await run(sandbox, 'fill', {}, { scratch, scratchBytes: quota })
    t.ok(fill.report != null, JSON.stringify(fill.error?.message))
    t.match(fill.report?.error, /ENOSPC|EFBIG/, `the write past the quota failed (${String(fill.report?.error)})`)
    t.ok(fill.report.bytes <= quota, `${fill.report.bytes} bytes written, quota ${quota}`)
    let held = 0
    for (const f of await readdir(scratch)) held += (await stat(join(scratch, f))).size
    t.ok(held <= quota, `the scratch directory holds ${held} bytes`)
    const again = await run(sandbox, 'count', {}, { scratch, scratchBytes: quota })
    t.equal(again.report?.n, 2, 'state written by one run is there for the next')
    t.equal(await readFile(join(scratch, 'counter'), 'utf8'), '2')
  })
}

t.test('the existing limits still hold: time', async t => {
  const sandbox = sandboxes.get(modes[0]!)!
  const loop = join(bundle, 'loop.js')
  await writeFile(loop, 'for (;;) {}', { mode: 0o644 })
  const started = Date.now()
  await t.rejects(runScript({ path: loop, scratch: join(root, 'scratch-loop'), input: {}, timeoutMs: 1500, logger: { info: () => {}, warn: () => {} }, sandbox }), { code: 'ERR_SCRIPT_TIMEOUT' })
  t.ok(Date.now() - started < 15_000, `killed after ${Date.now() - started} ms`)
})
