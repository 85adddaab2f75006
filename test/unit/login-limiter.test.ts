import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { LoginLimiter } from '../../coordinator/auth/login-limiter.ts'
import { openDatabase } from '../../node/store/db.ts'

const dir = await mkdtemp(join(tmpdir(), 'gatemesh-limits-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
let clock = 1_000_000
const now = (): number => clock

t.test('counted before the check: concurrent attempts cannot all pass', async t => {
  const limiter = new LoginLimiter(undefined, { freeAttempts: 5, now })
  const attempts = Array.from({ length: 40 }, () => limiter.begin('Dev', '10.0.0.1'))
  t.equal(attempts.filter(a => a.allowed).length, 5, 'five go on to the password check')
  const refused = attempts.filter(a => !a.allowed)
  t.equal(refused.length, 35)
  t.ok(refused.every(a => !a.allowed && a.reason === 'pair' && a.retryAfterSec === 1))
  t.equal(limiter.begin('dev', '10.0.0.2').allowed, true, 'another address is not affected (usernames compared without case)')
})

t.test('exponential backoff per address and username; a success clears it', async t => {
  const limiter = new LoginLimiter(undefined, { freeAttempts: 2, baseDelayMs: 1000, maxDelayMs: 8000, now })
  const fail = (): ReturnType<LoginLimiter['begin']> => limiter.begin('ops', '10.0.0.3')
  t.ok(fail().allowed)
  t.ok(fail().allowed)
  const waits: number[] = []
  for (let i = 0; i < 6; i++) {
    const refused = fail()
    t.notOk(refused.allowed)
    if (refused.allowed) return
    waits.push(refused.retryAfterSec)
    clock += refused.retryAfterSec * 1000
    t.ok(fail().allowed, 'one attempt after each wait')
  }
  t.same(waits, [1, 2, 4, 8, 8, 8], 'doubling up to the cap')
  const last = fail()
  t.notOk(last.allowed)
  clock += 8000
  const right = fail()
  t.ok(right.allowed)
  if (right.allowed) await right.succeeded()
  t.ok(fail().allowed && fail().allowed, 'the owner\'s success gave the free attempts back')
})

t.test('counters survive a restart', async t => {
  const db = await openDatabase(dir)
  const limiter = new LoginLimiter(db, { freeAttempts: 3, perAddress: 4, windowMs: 60_000, now })
  await limiter.open()
  for (const user of ['a', 'b', 'c', 'd']) t.ok(limiter.begin(user, '10.9.9.9').allowed)
  for (let i = 0; i < 3; i++) limiter.begin('victim', '10.1.1.1')
  const ok = limiter.begin('owner', '10.2.2.2')
  if (ok.allowed) await ok.succeeded()
  await limiter.flush()
  await db.close()

  clock += 30_000
  const db2 = await openDatabase(dir)
  t.teardown(async () => { await db2.close() })
  const again = new LoginLimiter(db2, { freeAttempts: 3, perAddress: 4, windowMs: 60_000, now })
  await again.open()
  const spray = again.begin('e', '10.9.9.9')
  t.notOk(spray.allowed, 'the address is still at its ceiling')
  t.equal(!spray.allowed && spray.reason, 'address')
  t.equal(!spray.allowed && spray.retryAfterSec, 30, 'until its window ends')
  t.ok(again.begin('victim', '10.1.1.1').allowed, 'the pair\'s short wait ran out while it was down')
  t.notOk(again.begin('victim', '10.1.1.1').allowed, 'but its failures were remembered: the next one waits again')
  clock += 31_000
  t.ok(again.begin('e', '10.9.9.9').allowed, 'a new window')
})
