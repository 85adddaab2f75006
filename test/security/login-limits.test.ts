import { request } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { initFleet } from '../../node/identity/fleet.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'

// Issue 14, "40 concurrent wrong passwords: all 40 checked, none refused;
// the limiter is in memory; 5 bad guesses also lock out the right password
// for 15 min": against a real coordinator process. Clients come from
// different loopback addresses (127.0.0.x), which the coordinator sees as
// different client addresses.

const root = await mkdtemp(join(tmpdir(), 'gatemesh-logins-'))
const fleetDir = join(root, 'fleet')
await initFleet(fleetDir)
const coordinator = new CoordinatorProcess({ dataDir: join(root, 'coordinator'), fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await rm(root, { recursive: true, force: true })
})
const PASSWORD = 'the-developers-password'
const ADMIN_PASSWORD = 'the-admins-password'
await coordinator.addUser('admin', ADMIN_PASSWORD, { admin: true })
await coordinator.addUser('dev', PASSWORD, { role: 'developer' })
/** a start that fails (too slow on a loaded machine) must not leave the process behind */
const start = async (): Promise<void> => {
  try {
    await coordinator.start()
  } catch (err) {
    await coordinator.stop()
    throw err
  }
}
await start()

/** POST /api/v1/auth/login from a given local address. */
async function login (username: string, password: string, from: string): Promise<{ status: number, retryAfter: number | undefined }> {
  const body = JSON.stringify({ username, password })
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: coordinator.httpPort, path: '/api/v1/auth/login', method: 'POST', localAddress: from, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: 120_000 }, res => {
      res.resume().on('end', () => {
        const retry = res.headers['retry-after']
        resolve({ status: res.statusCode ?? 0, retryAfter: retry == null ? undefined : Number(retry) })
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

const admin = await coordinator.login('admin', ADMIN_PASSWORD)
const passwordChecks = async (): Promise<number> => {
  const { text } = await coordinator.request('GET', '/metrics', { token: admin })
  return Number(/^gatemesh_coordinator_password_checks_total (\d+)/m.exec(text)?.[1] ?? NaN)
}

t.test('40 concurrent wrong logins: refused past the limit, counted before any password is checked', async t => {
  const before = await passwordChecks()
  const answers = await Promise.all(Array.from({ length: 40 }, async (_, i) => await login('dev', `wrong-guess-${i}`, '127.0.0.11')))
  const refused = answers.filter(a => a.status === 429)
  const checked = answers.filter(a => a.status === 401)
  t.equal(checked.length + refused.length, 40, 'every answer is a 401 or a 429')
  t.ok(checked.length <= 5, `${checked.length} passwords checked (the free attempts), not 40`)
  t.equal(refused.length, 40 - checked.length)
  t.ok(refused.every(a => a.retryAfter != null && a.retryAfter >= 1), 'every 429 says when to come back (Retry-After)')
  t.equal(await passwordChecks() - before, checked.length, 'scrypt ran only for the attempts let through')

  const owner = await login('dev', PASSWORD, '127.0.0.12')
  t.equal(owner.status, 200, 'the right password from another address still works')
  // from the attacking address the owner waits too, but seconds (the 1 s after the fifth failure may be over already on a slow machine), not fifteen minutes
  const same = await login('dev', PASSWORD, '127.0.0.11')
  if (same.status === 429) {
    t.ok((same.retryAfter ?? 0) <= 2, `the attacking address waits ${same.retryAfter} s`)
    await new Promise(resolve => setTimeout(resolve, (same.retryAfter ?? 1) * 1000 + 200))
    t.equal((await login('dev', PASSWORD, '127.0.0.11')).status, 200, 'and then the right password works there too')
  } else {
    t.equal(same.status, 200, 'the right password works from the attacking address once its short wait is over')
  }
})

t.test('the counters survive a restart', async t => {
  // password spraying from one address: 50 failures over ten usernames reach its ceiling (15 min)
  for (let u = 0; u < 10; u++) {
    const answers = await Promise.all(Array.from({ length: 5 }, async () => await login(`nobody${u}`, 'guess', '127.0.0.21')))
    t.ok(answers.every(a => a.status === 401), `nobody${u}: five free attempts`)
  }
  t.equal((await login('nobody10', 'guess', '127.0.0.21')).status, 429, 'the address is at its ceiling')
  await coordinator.stop()
  await start()
  const after = await login('dev', PASSWORD, '127.0.0.21')
  t.equal(after.status, 429, 'after the restart the address is still at its ceiling')
  t.ok((after.retryAfter ?? 0) > 60, `for the rest of its window (${after.retryAfter} s)`)
  t.equal((await login('dev', PASSWORD, '127.0.0.22')).status, 200, 'other addresses are not')
})
