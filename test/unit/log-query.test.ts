import { lpStream, streamPair } from '@libp2p/utils'
import t from 'tap'
import { answerLogs, askLogs, logQueryCodec, LogQueryRefusedError, type LogSource } from '../../protocols/log-query/index.ts'

const lines = Array.from({ length: 1234 }, (_, i) => JSON.stringify({ level: 'info', time: 1_000_000 + i, msg: `line ${i}` }))

function sourceOf (all: string[], seen: { closed: boolean, pulled: number }): LogSource {
  return async function * (query) {
    try {
      const ordered = query.order === 'asc' ? all : [...all].reverse()
      for (const line of ordered) {
        if (query.text != null && !line.includes(query.text)) continue
        seen.pulled++
        yield line
      }
    } finally {
      seen.closed = true
    }
  }
}

async function collect (pages: AsyncIterable<string[]>): Promise<string[]> {
  const out: string[] = []
  for await (const page of pages) out.push(...page)
  return out
}

t.test('pages through the matches up to the limit', async t => {
  const [asker, answerer] = await streamPair()
  const seen = { closed: false, pulled: 0 }
  const answered = answerLogs(answerer, sourceOf(lines, seen))
  const got = await collect(askLogs(asker, { query: { order: 'desc' }, limit: 1000, pageSize: 100 }))
  t.equal(got.length, 1000)
  t.equal(JSON.parse(got[0]!).msg, 'line 1233', 'newest first')
  t.equal((await answered).sent, 1000)
  t.ok(seen.closed, 'the source iterator was closed')
  t.ok(seen.pulled <= 1001, 'the answerer read no further than the limit')
})

t.test('everything when fewer lines match than the limit', async t => {
  const [asker, answerer] = await streamPair()
  const seen = { closed: false, pulled: 0 }
  const answered = answerLogs(answerer, sourceOf(lines, seen))
  const got = await collect(askLogs(asker, { query: { order: 'asc', text: 'line 12' }, limit: 5000, pageSize: 7 }))
  t.same(got.map(l => JSON.parse(l).msg), lines.filter(l => l.includes('line 12')).map(l => JSON.parse(l).msg))
  t.equal((await answered).sent, got.length)
})

t.test('an asker that stops early ends the exchange on both sides', async t => {
  const [asker, answerer] = await streamPair()
  const seen = { closed: false, pulled: 0 }
  const answered = answerLogs(answerer, sourceOf(lines, seen)).catch(err => err)
  for await (const page of askLogs(asker, { query: { order: 'desc' }, limit: 100_000, pageSize: 50 })) {
    t.equal(page.length, 50)
    break
  }
  await answered
  t.ok(seen.closed, 'the answerer released its source')
  t.ok(seen.pulled <= 100, `it read only what was asked for (${seen.pulled})`)
})

t.test('a refusal reaches the asker as a typed error', async t => {
  const [asker, answerer] = await streamPair()
  const seen = { closed: false, pulled: 0 }
  void answerLogs(answerer, sourceOf(lines, seen), { refuse: () => 'role gateway may not read logs' })
  await t.rejects(collect(askLogs(asker, { query: { order: 'desc' }, limit: 10, pageSize: 10 })), LogQueryRefusedError)
  t.equal(seen.pulled, 0, 'nothing was read for a refused query')
})

t.test('an answerer sending more than asked for is cut off', async t => {
  const [asker, rogue] = await streamPair()
  const lp = lpStream(rogue, { maxDataLength: logQueryCodec.maxBytes })
  void (async () => {
    await lp.read()
    await lp.write(logQueryCodec.encode({ type: 'page', entries: lines.slice(0, 20), done: false }))
  })()
  await t.rejects(collect(askLogs(asker, { query: { order: 'desc' }, limit: 10, pageSize: 10 })), { code: 'ERR_PROTOCOL_MESSAGE' })
})

t.test('garbage from an asker fails the answer with a protocol error, no crash', async t => {
  const [rogue, answerer] = await streamPair()
  const seen = { closed: false, pulled: 0 }
  const answered = answerLogs(answerer, sourceOf(lines, seen))
  const lp = lpStream(rogue, { maxDataLength: logQueryCodec.maxBytes })
  await lp.write(new Uint8Array([1, ...new TextEncoder().encode('{"type":"query","limit":-5}')]))
  await t.rejects(answered, { code: 'ERR_INVALID_MESSAGE' })
  const [rogue2, answerer2] = await streamPair()
  const answered2 = answerLogs(answerer2, sourceOf(lines, seen))
  await lpStream(rogue2).write(logQueryCodec.encode({ type: 'next' }))
  await t.rejects(answered2, { code: 'ERR_PROTOCOL_MESSAGE' })
  t.equal(seen.pulled, 0)
})

t.test('codec: limits and closed schemas', async t => {
  const query = { type: 'query' as const, query: { order: 'desc' as const }, limit: 10, pageSize: 10 }
  t.same(logQueryCodec.decode(logQueryCodec.encode(query)), query)
  const bad = (value: unknown): string => {
    try {
      logQueryCodec.decode(new Uint8Array([1, ...new TextEncoder().encode(JSON.stringify(value))]))
      return 'accepted'
    } catch (err: any) {
      return err.code
    }
  }
  t.equal(bad({ ...query, extra: 1 }), 'ERR_INVALID_MESSAGE', 'unknown fields')
  t.equal(bad({ ...query, query: { order: 'desc', sql: 'drop' } }), 'ERR_INVALID_MESSAGE', 'unknown query fields')
  t.equal(bad({ ...query, limit: 1_000_000 }), 'ERR_INVALID_MESSAGE', 'limit too large')
  t.equal(bad({ ...query, query: { order: 'desc', level: 'loud' } }), 'ERR_INVALID_MESSAGE', 'unknown level')
  t.equal(bad({ type: 'page', entries: ['x'.repeat(9000)], done: true }), 'ERR_INVALID_MESSAGE', 'line too long')
})

t.test('the agent answers only verified coordinators', async t => {
  const { LogQueryService } = await import('../../node/logs/log-query-service.ts')
  const { pino } = await import('pino')
  const handlers = new Map<string, any>()
  const roles: Record<string, string> = { coord: 'coordinator', gw: 'gateway' }
  const service = new LogQueryService({
    network: { handle: async (p, h) => { handlers.set(p, h) }, unhandle: async p => { handlers.delete(p) } },
    trust: { isVerified: id => id in roles, claimsFor: id => roles[id] == null ? undefined : { role: roles[id] } as any },
    store: { query: sourceOf(lines, { closed: false, pulled: 0 }) as any },
    logger: pino({ level: 'silent' })
  })
  await service.start()
  const handler = handlers.get('/gatemesh/log-query/1.0.0')
  const ask = async (peer: string): Promise<string[]> => {
    const [asker, answerer] = await streamPair()
    void handler(answerer, { remotePeer: { toString: () => peer } })
    return await collect(askLogs(asker, { query: { order: 'desc' }, limit: 5, pageSize: 5 }))
  }
  t.equal((await ask('coord')).length, 5, 'a coordinator gets answers')
  await t.rejects(ask('gw'), { code: 'ERR_LOG_QUERY_REFUSED', reason: 'ERR_FORBIDDEN' }, 'a gateway is refused')
  await t.rejects(ask('stranger'), LogQueryRefusedError, 'an unverified peer is refused')
  await service.stop()
  t.equal(handlers.size, 0, 'stop unregisters the protocol')
})
