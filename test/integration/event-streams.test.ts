import { readFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig, writeConfig } from '../../node/config/config.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'

// one agent (at most 3 watch streams) and a coordinator, as separate processes on 127.0.0.1
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
const sockets = new Set<Socket>()
t.teardown(async () => {
  for (const s of sockets) s.destroy()
  await coordinator.stop()
  await cluster.close()
})
const gw = await cluster.addNode('gw')
const config = await loadConfig(gw.dir)
await writeConfig(gw.dir, { ...config, api: { ...config.api, maxWatchStreams: 3 } })
await cluster.start('gw')
coordinator.init.bootstrap = [gw.multiaddr]
await coordinator.start()
const token = await coordinator.login('admin', await waitFor(() => coordinator.printedPassword(), 'the first admin\'s password', 60_000))

/** A stream read with fetch, counting events, aborted by the test. */
function reader (url: string, headers: Record<string, string> = {}): { events: () => number, abort: () => void, done: Promise<void> } {
  const controller = new AbortController()
  let events = 0
  const done = (async () => {
    const res = await fetch(url, { headers, signal: controller.signal })
    if (res.status !== 200) throw new Error(`${url}: ${res.status}`)
    const decoder = new TextDecoder()
    let buffer = ''
    for await (const chunk of res.body!) {
      buffer += decoder.decode(chunk, { stream: true })
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        if (/^event: /m.test(buffer.slice(0, end))) events++
        buffer = buffer.slice(end + 2)
      }
    }
  })().catch(err => { if (!controller.signal.aborted) throw err })
  return { events: () => events, abort: () => { controller.abort() }, done }
}

/** A raw HTTP client that never reads what it is sent. */
async function stalled (port: number, path: string, headers: Record<string, string> = {}): Promise<Socket> {
  const socket = connect(port, '127.0.0.1')
  sockets.add(socket)
  socket.on('error', () => {})
  await new Promise(resolve => socket.once('connect', resolve))
  socket.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`)
  socket.pause()
  return socket
}

const gauge = async (url: string, name: string, headers: Record<string, string> = {}): Promise<number> => {
  const text = await (await fetch(url, { headers, signal: AbortSignal.timeout(10_000) })).text()
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, 'm').exec(text)
  return m == null ? NaN : Number(m[1])
}
const watchStreams = async (): Promise<number> => await gauge(`${gw.api}/metrics`, 'gatemesh_watch_streams')
const eventStreams = async (): Promise<number> => await gauge(`${coordinator.url}/metrics`, 'gatemesh_coordinator_event_streams', { authorization: `Bearer ${token}` })
const rssMb = async (pid: number): Promise<number> => Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]) / 1024

/**
 * Registry writes on the agent for as long as `run` is true: each is a watch
 * event, and a coordinator event. Paced at 25 a second, half the gossip rate
 * a writer is allowed (`registry.quota.entriesPerSec`, 50): written as fast
 * as a quiet machine takes them, they outran the writer's burst of 1000 by
 * the third test and the coordinator refused them (and said so at warn),
 * which is the quota working, not these streams failing.
 */
function writer (): { stop: () => Promise<void> } {
  let run = true
  const loop = (async () => {
    for (let i = 0; run; i++) {
      await Promise.all([
        cluster.request('gw', 'PUT', `/v1/registry/instance/${gw.peerId}/flow-${i % 50}`, { value: { i } }).catch(() => {}),
        sleep(40)
      ])
    }
  })()
  return { stop: async () => { run = false; await loop } }
}

/** Lines of the agent's log file from `offset` on, at warn or above. */
async function agentProblems (offset: number): Promise<string[]> {
  const text = (await readFile(join(gw.dir, 'logs', 'agent.log'), 'utf8')).slice(offset)
  return text.split('\n').filter(l => /"level":"(warn|error|fatal)"/.test(l))
}
const logSize = async (): Promise<number> => (await readFile(join(gw.dir, 'logs', 'agent.log'), 'utf8')).length

await t.test('agent: watch streams closed mid-flight end cleanly; the cap holds and frees up', async t => {
  const offset = await logSize()
  const flow = writer()
  const url = `${gw.api}/v1/watch?prefix=instance/`
  const readers = [reader(url), reader(url)]
  const raw = await stalled(gw.apiPort, '/v1/watch?prefix=instance/')
  raw.resume()
  await waitFor(async () => await watchStreams() === 3, 'three streams open', 30_000)
  const refused = await fetch(url, { signal: AbortSignal.timeout(10_000) })
  t.equal(refused.status, 429, 'a fourth stream is refused')
  t.equal(refused.headers.get('retry-after'), '5')
  t.equal(((await refused.json()) as { code?: string }).code, 'ERR_TOO_MANY_STREAMS')

  await waitFor(() => readers.every(r => r.events() >= 5), 'events to flow to every reader', 60_000)
  // mid-flight: the fetch readers abort, the raw socket is cut in the middle of whatever it was receiving
  for (const r of readers) r.abort()
  raw.destroy()
  await Promise.all(readers.map(async r => { await r.done }))
  await waitFor(async () => await watchStreams() === 0, 'the stream count to return to 0', 30_000)
  t.pass('the stream count is back to 0 while events still flow')
  const again = reader(url)
  await waitFor(() => again.events() >= 1, 'a new stream to get events', 30_000)
  t.pass('a new stream opens and gets events')
  again.abort()
  await again.done
  await flow.stop()
  await waitFor(async () => await watchStreams() === 0, 'no streams', 30_000)
  t.equal(cluster.node('gw').child?.exitCode, null, 'the agent is up')
  t.same(await agentProblems(offset), [], 'nothing logged above debug about it (no warn or error at all)')
})

await t.test('agent: a reader that never reads is cut off as a slow consumer, and memory stays bounded', async t => {
  const pid = cluster.node('gw').child!.pid!
  const socket = await stalled(gw.apiPort, '/v1/watch?prefix=instance/')
  await waitFor(async () => await watchStreams() === 1, 'the stream to open', 30_000)
  await sleep(1000)
  const before = await rssMb(pid)
  // 64 keys of 60 KiB: coalescing cannot keep that under the 2 MiB a stream may hold
  const pad = 'v'.repeat(60 * 1024)
  let sent = 0
  for (; sent < 800 && await watchStreams() > 0; sent++) {
    const res = await cluster.request('gw', 'PUT', `/v1/registry/instance/${gw.peerId}/big-${sent % 64}`, { value: { sent, pad } })
    if (res.status !== 200) throw new Error(`write ${sent}: ${res.status}`)
  }
  await waitFor(async () => await watchStreams() === 0, 'the agent to close the stream', 30_000)
  const after = await rssMb(pid)
  t.pass(`closed after ${sent} writes of 60 KiB (${(sent * 60 / 1024).toFixed(1)} MiB of events the reader never took)`)
  t.ok(after - before < 64, `agent RSS ${before.toFixed(0)} → ${after.toFixed(0)} MiB`)
  socket.resume()
  const text = await new Promise<string>(resolve => {
    let got = ''
    socket.setEncoding('utf8').on('data', (d: string) => { got += d }).on('close', () => { resolve(got) })
    setTimeout(() => { resolve(got) }, 10_000).unref()
  })
  t.ok(text.includes('event: close\ndata: {"reason":"slow-consumer"}\n\n'), 'the stream ends saying why')
  t.ok(text.endsWith('0\r\n\r\n'), 'and the response ends properly (chunked encoding\'s last chunk)')
  t.equal(cluster.node('gw').child?.exitCode, null, 'the agent is up')
})

await t.test('coordinator: an event stream closed mid-flight ends cleanly', async t => {
  const before = coordinator.stdout.length
  const flow = writer()
  const headers = { authorization: `Bearer ${token}` }
  const streams = [reader(`${coordinator.url}/api/v1/events`, headers), reader(`${coordinator.url}/api/v1/events`, headers)]
  const raw = await stalled(Number(new URL(coordinator.url).port), '/api/v1/events', headers)
  raw.resume()
  await waitFor(async () => await eventStreams() === 3, 'three streams open', 30_000)
  await waitFor(() => streams.every(s => s.events() >= 3), 'node events to flow', 60_000)
  for (const s of streams) s.abort()
  raw.destroy()
  await Promise.all(streams.map(async s => { await s.done }))
  await waitFor(async () => await eventStreams() === 0, 'the stream count to return to 0', 30_000)
  t.pass('the stream count is back to 0')
  await flow.stop()
  t.equal(coordinator.child?.exitCode, null, 'the coordinator is up')
  const problems = coordinator.stdout.slice(before).split('\n').filter(l => /"level":"(warn|error|fatal)"/.test(l))
  t.same(problems, [], 'nothing logged above debug about it')
})
