import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import t from 'tap'
import { Outbox, type OutboxJob } from '../../node/outbox/outbox.ts'
import { PermanentDeliveryError } from '../../node/outbox/errors.ts'
import { waitFor } from '../helpers/cluster.ts'
import type { Database } from '../../node/store/db.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-outbox-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
const logger = pino({ level: 'silent' })

async function openDb (name: string): Promise<Database> {
  const db = new Level<string, unknown>(join(root, name), { valueEncoding: 'json' }) as Database
  await db.open()
  return db
}

const job = (n: number): Parameters<Outbox['enqueue']>[0] => ({ type: 'log', action: { type: 'log', level: 'info', message: `m${n}` }, event: { n, ts: Date.now() }, instance: 'i', rule: 'r' })

t.test('retries with growing, jittered delays until delivered', async t => {
  const db = await openDb('retry')
  const attempts: number[] = []
  // when each retry was scheduled for: the backoff the outbox chose, whatever a busy machine does to timers
  const scheduled: number[] = []
  let failures = 3
  const outbox = new Outbox({
    db,
    logger,
    deliver: async (j) => {
      attempts.push(Date.now())
      scheduled.push(j.nextAt)
      if (failures-- > 0) throw new Error('receiver down')
    }
  }, { baseDelayMs: 40, maxDelayMs: 1000, maxAttempts: 10 })
  await outbox.start()
  const queued = (await outbox.enqueue(job(1)))!
  await waitFor(() => outbox.size === 0, 'delivery', 5000, 10)
  t.equal(attempts.length, 4, 'three failures, then success')
  const gaps = attempts.slice(1).map((a, i) => a - attempts[i]!)
  t.ok(gaps[0]! >= 20 && gaps[1]! >= 40 && gaps[2]! >= 80, `backoff grows: ${gaps.join(', ')} ms`)
  // the chosen delay (from a failure to the time its retry was due) is within [exp/2, exp] of each step;
  // the measured gaps can be longer than that when timers run late on a loaded machine
  const chosen = scheduled.slice(1).map((due, i) => due - attempts[i]!)
  t.ok(chosen.every((d, i) => d >= 20 * 2 ** i && d <= 40 * 2 ** i + 15), `within the cap of each step: ${chosen.join(', ')} ms`)
  t.match(queued.id, /^[0-9a-f-]{36}$/, 'jobs get a UUID as idempotency key')
  t.equal((await db.sublevel('outbox').keys().all()).length, 0, 'nothing left in level')
  await outbox.stop()
  await db.close()
})

t.test('a retry set while the wall clock was ahead is not held back once the clock steps back', async t => {
  const db = await openDb('clock-step')
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  // five minutes ahead (as faketime makes it in the chaos run) while the first attempt fails and its retry is set
  Date.now = () => realNow() + 300_000
  const quiet = (): void => {}
  // the clock steps back right after the retry was set, before the outbox looks at what is due next
  const steppingLogger = { info: quiet, error: quiet, debug: quiet, warn: (_o: unknown, msg?: string) => { if (msg === 'delivery failed; will retry') Date.now = realNow } }
  let attempts = 0
  const outbox = new Outbox({
    db,
    logger: steppingLogger as unknown as typeof logger,
    deliver: async () => {
      if (attempts++ === 0) throw new Error('receiver down')
    }
  }, { baseDelayMs: 40, maxDelayMs: 1000, maxAttempts: 10 })
  await outbox.start()
  await outbox.enqueue(job(1))
  // the retry is due 20-40 ms after the failure; by the wall clock it was five minutes away.
  // Polled on the monotonic clock: waitFor's deadline is wall-clock time, which this test moves
  const deadline = performance.now() + 20_000
  while (outbox.size > 0 && performance.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(outbox.size, 0, 'the retry ran within 20 s, not once the wall clock caught up')
  t.equal(attempts, 2, 'failed once, delivered at the retry')
  await outbox.stop()
  await db.close()
})

t.test('a job whose bookkeeping fails waits before it is tried again instead of spinning', async t => {
  const db = await openDb('bookkeeping')
  let errors = 0
  let outbox: Outbox | undefined
  const quiet = (): void => {}
  // level refuses on a closed database without touching the event loop: retried at once, the
  // outbox spun and starved everything else (an agent's API, the reopen). A guard ends that.
  const countingLogger = { info: quiet, warn: quiet, debug: quiet, error: () => { if (++errors >= 200) void outbox?.stop() } }
  let failures = 1
  outbox = new Outbox({
    db,
    logger: countingLogger as unknown as typeof logger,
    deliver: async () => { if (failures-- > 0) throw new Error('receiver down') }
  }, { baseDelayMs: 200, maxDelayMs: 1000 })
  await outbox.start()
  await outbox.enqueue(job(1))
  // the first attempt fails; before its retry (100-200 ms later) the database closes under the outbox
  await db.close()
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.ok(errors >= 1, `the closed database was noticed (${errors} bookkeeping failures)`)
  t.ok(errors < 20, `and tried again after a while, not at once (${errors} failures in 1 s)`)
  t.equal(outbox.size, 1, 'the job is still queued')
  await outbox.stop()
})

t.test('dead letters: after maxAttempts, or at once for a permanent refusal; retry puts them back', async t => {
  const db = await openDb('dead')
  let fixed = false
  const outbox = new Outbox({
    db,
    logger,
    deliver: async (j: OutboxJob) => {
      if (fixed) return
      if (j.event.n === 2) throw new PermanentDeliveryError('400 bad number')
      throw new Error('still down')
    }
  }, { baseDelayMs: 10, maxDelayMs: 20, maxAttempts: 3 })
  await outbox.start()
  await outbox.enqueue(job(1))
  await outbox.enqueue(job(2))
  await waitFor(async () => (await outbox.dead()).length === 2, 'two dead letters', 5000, 10)
  const dead = await outbox.dead()
  const byN = new Map(dead.map(d => [d.event.n, d]))
  t.equal(byN.get(1)?.attempts, 3, 'transient failures: maxAttempts tries')
  t.equal(byN.get(2)?.attempts, 1, 'a permanent refusal: one try')
  t.equal(byN.get(2)?.lastError, '400 bad number')
  t.equal(outbox.size, 0)
  fixed = true
  await outbox.retryDead(byN.get(1)!.id)
  await waitFor(() => outbox.size === 0, 'the retried job delivered', 5000, 10)
  t.equal((await outbox.dead()).length, 1)
  await t.rejects(outbox.retryDead('nope'), { code: 'ERR_NOT_FOUND' })
  await outbox.stop()
  await db.close()
})

t.test('nothing is lost across a restart; a delivery cut short is repeated with the same key', async t => {
  const db = await openDb('restart')
  const first = new Outbox({ db, logger, deliver: async () => { throw new Error('receiver down') } }, { baseDelayMs: 10_000 })
  await first.start()
  const ids = []
  for (let n = 0; n < 5; n++) ids.push((await first.enqueue(job(n)))!.id)
  await waitFor(() => first.pending().every(j => j.attempts === 1), 'one failed attempt each', 5000, 10)
  await first.stop()
  await db.close()

  const again = await openDb('restart')
  const seen: string[] = []
  const second = new Outbox({ db: again, logger, deliver: async (j: OutboxJob) => { seen.push(j.id) } }, { baseDelayMs: 10 })
  await second.start()
  t.equal(second.size, 5, 'five jobs reloaded')
  t.ok(second.pending().every(j => j.attempts === 1 && j.lastError === 'receiver down'), 'with their attempt counts')
  // the backoff chosen before the restart still holds: deliver them now anyway by retrying via a fresh kick
  await waitFor(() => second.size === 0 || second.pending().every(j => j.nextAt > Date.now()), 'reload', 1000, 10)
  t.equal(seen.length, 0, 'not before their retry time')
  await second.stop()
  await again.close()

  // a restart after the backoff passed delivers each once, under its original id
  const third = await openDb('restart')
  const later = new Outbox({ db: third, logger, deliver: async (j: OutboxJob) => { seen.push(j.id) } }, { baseDelayMs: 10 })
  for (const j of await third.sublevel<string, OutboxJob>('outbox', { valueEncoding: 'json' }).values().all()) {
    await third.sublevel<string, OutboxJob>('outbox', { valueEncoding: 'json' }).put(j.id, { ...j, nextAt: Date.now() })
  }
  await later.start()
  await waitFor(() => later.size === 0, 'all five delivered', 5000, 10)
  t.same(seen.sort(), ids.sort(), 'the same five ids, once each')
  await later.stop()
  await third.close()
})

t.test('a repeat of a taken id is dropped: while queued, once delivered, after a restart; the window is bounded', async t => {
  const db = await openDb('dedupe')
  const delivered: string[] = []
  let down = true
  const first = new Outbox({ db, logger, deliver: async (j: OutboxJob) => { if (down) throw new Error('receiver down'); delivered.push(j.id) } }, { baseDelayMs: 20, maxDelayMs: 40, dedupeMaxEntries: 100 })
  await first.start()
  const a = await first.enqueue({ ...job(1), id: 'request-a' })
  t.equal(a?.id, 'request-a')
  const again = await first.enqueue({ ...job(1), id: 'request-a' })
  t.equal(again, a, 'a repeat while the first is queued answers the queued job')
  t.equal(first.size, 1, 'and queues nothing more')
  down = false
  await waitFor(() => first.size === 0, 'delivery', 5000, 10)
  t.equal(await first.enqueue({ ...job(1), id: 'request-a' }), undefined, 'a repeat after delivery: dropped, nothing queued')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.same(delivered, ['request-a'], 'delivered once')
  await first.stop()
  await db.close()

  const reopened = await openDb('dedupe')
  const second = new Outbox({ db: reopened, logger, deliver: async (j: OutboxJob) => { delivered.push(j.id) } }, { baseDelayMs: 20, dedupeMaxEntries: 100 })
  await second.start()
  t.equal(await second.enqueue({ ...job(1), id: 'request-a' }), undefined, 'after a restart the window still holds it')
  // a flood of distinct ids: the window keeps the newest 100, in memory and on disk
  for (let n = 0; n < 150; n++) await second.enqueue({ ...job(n), id: `flood-${n}` })
  await waitFor(() => second.size === 0, 'the flood delivered', 10_000, 10)
  const kept = await reopened.sublevel<string, number>('outbox-seen', { valueEncoding: 'json' }).keys().all()
  t.equal(kept.length, 100, 'the window on disk holds its bound')
  t.notOk(kept.includes('request-a') || kept.includes('flood-0'), 'the oldest were forgotten')
  t.ok(kept.includes('flood-149'), 'the newest kept')
  const back = await second.enqueue({ ...job(1), id: 'request-a' })
  t.equal(back?.id, 'request-a', 'an id that fell out of the window is taken again')
  await waitFor(() => second.size === 0, 'delivery', 5000, 10)
  t.equal(delivered.filter(id => id === 'request-a').length, 2, 'and delivered: the window is a bound, not forever')
  await second.stop()
  await reopened.close()
})

t.test('the window forgets ids older than dedupeWindowMs, at start too', async t => {
  const db = await openDb('dedupe-age')
  const delivered: string[] = []
  const outbox = new Outbox({ db, logger, deliver: async (j: OutboxJob) => { delivered.push(j.id) } }, { dedupeWindowMs: 1000 })
  await outbox.start()
  await outbox.enqueue({ ...job(1), id: 'old' })
  await waitFor(() => outbox.size === 0, 'delivery', 5000, 10)
  t.equal(await outbox.enqueue({ ...job(1), id: 'old' }), undefined, 'dropped within the window')
  await outbox.stop()
  await new Promise(resolve => setTimeout(resolve, 1100))
  const later = new Outbox({ db, logger, deliver: async (j: OutboxJob) => { delivered.push(j.id) } }, { dedupeWindowMs: 1000 })
  await later.start()
  t.same(await db.sublevel<string, number>('outbox-seen', { valueEncoding: 'json' }).keys().all(), [], 'expired entries are removed from disk at start')
  t.equal((await later.enqueue({ ...job(1), id: 'old' }))?.id, 'old', 'and the id is taken again')
  await waitFor(() => later.size === 0, 'delivery', 5000, 10)
  t.same(delivered, ['old', 'old'])
  await later.stop()
  await db.close()
})
