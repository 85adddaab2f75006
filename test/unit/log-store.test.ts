import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createLogger } from '../../node/logs/logger.ts'
import { LogStore, type LogQuery } from '../../node/logs/log-store.ts'
import { openDatabase, type Database } from '../../node/store/db.ts'

async function freshDb (t: Test): Promise<{ db: Database, dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'gm-logstore-'))
  const db = await openDatabase(dir)
  t.teardown(async () => {
    await db.close()
    await rm(dir, { recursive: true, force: true })
  })
  return { db, dir }
}

async function all (store: LogStore, query: LogQuery = {}): Promise<any[]> {
  const out = []
  for await (const line of store.query(query)) out.push(JSON.parse(line))
  return out
}

t.test('lines from pino are searchable by level, service, text and time', async t => {
  const { db } = await freshDb(t)
  const store = new LogStore({ flushIntervalMs: 10 })
  const { logger } = createLogger({ node: 'peer-1', stdout: false, level: 'debug', sinks: [store] })
  // lines logged before the database opens are kept
  logger.child({ service: 'early' }).info('before open')
  await store.open(db)
  const registry = logger.child({ service: 'registry' })
  const membership = logger.child({ service: 'membership' })
  registry.debug({ keys: 3 }, 'registry loaded')
  membership.info({ peer: 'peer-2' }, 'member alive')
  membership.warn({ peer: 'peer-3' }, 'member dead')
  registry.error({ err: 'boom' }, 'persisting failed')

  const every = await all(store)
  t.same(every.map(l => l.msg), ['persisting failed', 'member dead', 'member alive', 'registry loaded', 'before open'], 'newest first')
  t.ok(every.every(l => l.node === 'peer-1' && typeof l.time === 'number'))
  t.same((await all(store, { order: 'asc' })).map(l => l.msg)[0], 'before open', 'oldest first when asked')
  t.same((await all(store, { level: 'warn' })).map(l => l.msg), ['persisting failed', 'member dead'], 'level is a minimum')
  t.same((await all(store, { services: ['membership'] })).map(l => l.msg), ['member dead', 'member alive'])
  t.same((await all(store, { text: 'PEER-3' })).map(l => l.msg), ['member dead'], 'text is case-insensitive and matches fields')
  t.same((await all(store, { text: 'a.b*c' })), [], 'text is literal, not a pattern')
  const middle = every[2].time
  t.ok((await all(store, { since: middle + 1 })).every(l => l.time > middle))
  t.ok((await all(store, { until: middle - 1 })).every(l => l.time < middle))
  t.equal(store.stats().entries, 5)
  await store.close()
  logger.info('after close')
  t.equal(store.stats().entries, 5, 'a closed store ignores lines')
})

t.test('retention: count, bytes and age caps drop the oldest lines', async t => {
  await t.test('count', async t => {
    const { db } = await freshDb(t)
    const store = new LogStore({ maxEntries: 100, flushIntervalMs: 5 })
    await store.open(db)
    const now = Date.now()
    for (let i = 0; i < 250; i++) store.write(JSON.stringify({ level: 'info', time: now + i, msg: `line ${i}` }) + '\n')
    await store.flush()
    const kept = await all(store)
    t.ok(kept.length <= 100 && kept.length >= 90, `kept ${kept.length}`)
    t.equal(kept[0].msg, 'line 249', 'the newest line is kept')
    t.equal(store.stats().entries, kept.length, 'the counter matches what is stored')
    await store.close()
  })
  await t.test('bytes', async t => {
    const { db } = await freshDb(t)
    const store = new LogStore({ maxBytes: 20_000, flushIntervalMs: 5 })
    await store.open(db)
    const now = Date.now()
    for (let i = 0; i < 200; i++) store.write(JSON.stringify({ level: 'info', time: now + i, msg: `line ${i} ${'x'.repeat(200)}` }))
    await store.flush()
    t.ok(store.stats().bytes <= 20_000, `${store.stats().bytes} bytes kept`)
    t.equal((await all(store))[0].msg.split(' ')[1], '199')
    await store.close()
  })
  await t.test('age', async t => {
    const { db } = await freshDb(t)
    let now = 1_700_000_000_000
    const store = new LogStore({ maxAgeMs: 60_000, flushIntervalMs: 5, now: () => now })
    await store.open(db)
    store.write(JSON.stringify({ level: 'info', time: now - 120_000, msg: 'old' }))
    store.write(JSON.stringify({ level: 'info', time: now, msg: 'new' }))
    await store.flush()
    // a flush prunes only past the count or byte caps; the age cap is enforced periodically and on open
    now += 1000
    await store.close()
    const again = new LogStore({ maxAgeMs: 60_000, flushIntervalMs: 5, now: () => now })
    await again.open(db)
    await again.flush()
    t.same((await all(again)).map(l => l.msg), ['new'])
    t.equal(again.stats().entries, 1)
    await again.close()
  })
})

t.test('survives a restart; oversized lines keep their essentials', async t => {
  const { db } = await freshDb(t)
  const store = new LogStore({ flushIntervalMs: 5, maxLineBytes: 1024 })
  await store.open(db)
  store.write(JSON.stringify({ level: 'error', time: Date.now() - 1000, node: 'n', service: 'api', msg: 'huge', stack: 'x'.repeat(5000) }))
  store.write('not json at all, still kept')
  await store.close()
  const reopened = new LogStore({ flushIntervalMs: 5 })
  await reopened.open(db)
  t.equal(reopened.stats().entries, 2, 'counters restored from disk')
  const lines: string[] = []
  for await (const line of reopened.query({ order: 'asc' })) lines.push(line)
  t.match(JSON.parse(lines[0]!), { level: 'error', service: 'api', msg: 'huge', truncated: true })
  t.notOk(JSON.parse(lines[0]!).stack, 'the long field is gone')
  t.equal(lines[1], 'not json at all, still kept')
  t.same(await all(reopened, { level: 'error' }), [JSON.parse(lines[0]!)], 'a line without a level does not pass a level filter')
  await reopened.close()
})

t.test('a full buffer drops the oldest lines and counts them', async t => {
  const store = new LogStore({ maxPending: 10 })
  const now = Date.now()
  for (let i = 0; i < 25; i++) store.write(JSON.stringify({ level: 'info', time: now + i, msg: String(i) }))
  t.equal(store.stats().dropped, 15)
  const { db } = await freshDb(t)
  await store.open(db)
  t.same((await all(store)).map(l => l.msg), ['24', '23', '22', '21', '20', '19', '18', '17', '16', '15'])
  await store.close()
})
