import { connect, type Socket } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { errorHandler } from '../../node/api/errors.ts'
import { EventStreams, type EventStream } from '../../node/api/event-stream.ts'
import type { Logger } from 'pino'

interface Harness {
  app: FastifyInstance
  port: number
  streams: EventStreams
  opened: EventStream[]
  /** server-side writable length seen after each send, per stream */
  queued: number[]
  logs: Array<{ level: string, msg: string }>
}

/** A real HTTP server whose `/events` route opens a stream and hands it to the test. */
async function harness (t: Test, init: { max?: number, heartbeatMs?: number, maxPendingBytes?: number } = {}): Promise<Harness> {
  const logs: Harness['logs'] = []
  const logger = { debug: (_obj: unknown, msg?: string) => { logs.push({ level: 'debug', msg: msg ?? '' }) } } as unknown as Pick<Logger, 'debug'>
  const app = Fastify()
  app.setErrorHandler(errorHandler)
  const streams = new EventStreams({ max: init.max ?? 10, heartbeatMs: init.heartbeatMs ?? 60_000, maxPendingBytes: init.maxPendingBytes ?? 256 * 1024, logger })
  const h: Harness = { app, port: 0, streams, opened: [], queued: [], logs }
  app.get('/events', async (_request, reply) => {
    const stream = streams.open(reply)
    stream.comment('open')
    h.opened.push(stream)
  })
  app.addHook('preClose', async () => { streams.closeAll() })
  await app.listen({ host: '127.0.0.1', port: 0 })
  h.port = (app.server.address() as { port: number }).port
  t.teardown(async () => { await app.close() })
  return h
}

/** A raw HTTP client: the test decides when (and whether) it reads. */
async function rawGet (port: number): Promise<{ socket: Socket, text: () => string }> {
  const socket = connect(port, '127.0.0.1')
  let received = ''
  socket.setEncoding('utf8').on('data', (d: string) => { received += d })
  socket.on('error', () => {})
  await new Promise(resolve => socket.once('connect', resolve))
  socket.write(`GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`)
  return { socket, text: () => received }
}

async function until (what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

t.test('at most max streams: the next is a 429 with Retry-After, and a closed one frees its place', async t => {
  const h = await harness(t, { max: 2 })
  const a = await rawGet(h.port)
  const b = await rawGet(h.port)
  await until('two streams', () => h.streams.size === 2)
  const refused = await fetch(`http://127.0.0.1:${h.port}/events`)
  t.equal(refused.status, 429, 'the third stream is refused')
  t.equal(refused.headers.get('retry-after'), '5')
  t.match(await refused.json(), { code: 'ERR_TOO_MANY_STREAMS', message: /2 event streams are open; the limit is 2/ })
  a.socket.destroy()
  await until('the aborted stream to end', () => h.streams.size === 1)
  const c = await rawGet(h.port)
  await until('a new stream', () => h.streams.size === 2)
  t.pass('a new stream opens once one ended')
  b.socket.destroy()
  c.socket.destroy()
  await until('no streams', () => h.streams.size === 0)
})

t.test('a client that aborts while events flow ends its stream quietly', async t => {
  const h = await harness(t)
  const client = await rawGet(h.port)
  await until('the stream', () => h.opened.length === 1)
  const stream = h.opened[0]!
  let closedHandlers = 0
  stream.onClose(() => { closedHandlers++ })
  const timer = setInterval(() => { for (let i = 0; i < 20; i++) stream.send('change', { i, pad: 'x'.repeat(512) }) }, 1)
  t.teardown(() => { clearInterval(timer) })
  await until('events to arrive', () => client.text().includes('event: change'))
  client.socket.destroy()
  await until('the stream to end', () => stream.closed)
  clearInterval(timer)
  t.equal(closedHandlers, 1, 'its close handlers ran once')
  t.equal(h.streams.size, 0, 'the stream count is back to 0')
  stream.send('change', { after: true })
  t.pass('sending on an ended stream is a no-op')
  const res = await fetch(`http://127.0.0.1:${h.port}/events`, { signal: AbortSignal.timeout(5000) })
  t.equal(res.status, 200, 'the server still serves streams')
  await res.body?.cancel()
})

t.test('a reader that does not read: events wait in bounded memory, then the stream closes as slow-consumer', async t => {
  const maxPendingBytes = 256 * 1024
  const h = await harness(t, { maxPendingBytes })
  const client = await rawGet(h.port)
  await until('the stream', () => h.opened.length === 1)
  client.socket.pause()
  const stream = h.opened[0]!
  const pad = 'y'.repeat(64 * 1024)
  let maxBuffered = 0
  let sent = 0
  // what the socket does not take waits in memory, up to the limit; then the stream ends
  while (!stream.closed && sent < 5000) {
    stream.send('change', { i: sent, pad }, `key-${sent}`)
    sent++
    maxBuffered = Math.max(maxBuffered, stream.bufferedBytes)
    if (sent % 10 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  t.ok(stream.closed, `closed after ${sent} events of 64 KiB that the reader never took`)
  t.ok(maxBuffered < maxPendingBytes + 256 * 1024, `at most ${maxBuffered} bytes held for it (pending limit ${maxPendingBytes})`)
  t.equal(h.streams.size, 0, 'the stream count is back to 0')
  client.socket.resume()
  await until('the close event', () => client.text().includes('event: close'), 20_000)
  t.match(client.text(), /event: close\ndata: \{"reason":"slow-consumer"\}/, 'the last event says why')
  client.socket.destroy()
})

t.test('a lagging reader gets the latest state per key, coalesced, in order', async t => {
  const h = await harness(t, { maxPendingBytes: 4 * 1024 * 1024 })
  const client = await rawGet(h.port)
  await until('the stream', () => h.opened.length === 1)
  client.socket.pause()
  const stream = h.opened[0]!
  // fill the socket until Node holds writes back; what follows waits in memory
  let filler = 0
  while (stream.bufferedBytes < 256 * 1024 && filler < 5000) {
    stream.send('fill', { n: filler, pad: 'z'.repeat(32 * 1024) })
    filler++
    if (filler % 10 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  t.notOk(stream.closed, `the reader lags (${filler} fillers sent)`)
  for (let v = 0; v < 1000; v++) for (const k of ['a', 'b', 'c']) stream.send('change', { k, v }, k)
  client.socket.resume()
  await until('the latest values', () => ['a', 'b', 'c'].every(k => client.text().includes(`{"k":"${k}","v":999}`)), 20_000)
  const changes = [...client.text().matchAll(/event: change\ndata: (.*)\n/g)].map(m => JSON.parse(m[1]!))
  t.ok(changes.length <= 3, `${changes.length} change events delivered for 3000 updates`)
  for (const k of ['a', 'b', 'c']) t.same(changes.filter(c => c.k === k).map(c => c.v), [999], `${k}: only the latest value`)
  t.ok(client.text().indexOf(`"n":${filler - 1}`) < client.text().indexOf('event: change'), 'the fillers sent before still come first')
  client.socket.destroy()
})

t.test('heartbeats keep an idle stream alive', async t => {
  const h = await harness(t, { heartbeatMs: 50 })
  const client = await rawGet(h.port)
  await until('two pings', () => client.text().split(': ping').length > 2, 5000)
  t.pass('pings arrive while nothing happens')
  client.socket.destroy()
  await until('no streams', () => h.streams.size === 0)
})

t.test('closeAll ends every stream with a shutdown reason', async t => {
  const h = await harness(t)
  const client = await rawGet(h.port)
  await until('the stream', () => h.streams.size === 1)
  h.streams.closeAll()
  await until('the close event', () => client.text().includes('event: close'))
  t.match(client.text(), /"reason":"shutdown"/)
  t.equal(h.streams.size, 0)
  client.socket.destroy()
})
