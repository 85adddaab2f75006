import { generateKeyPairSync } from 'node:crypto'
import { SignJWT } from 'jose'
import t, { type Test } from 'tap'
import { ACCESS_TOKEN_TYP, AUDIENCE, ISSUER } from '../../coordinator/auth/access-tokens.ts'
import { SERVICES } from '../../coordinator/auth/roles.ts'
import { httpClient, injectClient, PASSWORDS, testCoordinator, type Client } from '../helpers/coordinator-app.ts'

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')

/** The same checks through app.inject() and over real HTTP. */
async function authSuite (t: Test, client: Client, coordinator: Awaited<ReturnType<typeof testCoordinator>>): Promise<void> {
  const login = async (username: string, password: string) => await client.request('POST', '/api/v1/auth/login', { body: { username, password } })

  await t.test('login success: token, expiry, user, roles and services', async t => {
    const res = await login('admin', PASSWORDS.admin)
    t.equal(res.status, 200)
    t.match(res.body, { token: String, expiresAt: Number, refreshToken: /^gmr_/, user: { username: 'admin', roles: ['admin'], disabled: false }, roles: ['admin'] })
    t.same(res.body.services, [...SERVICES], 'an admin may use every service')
    t.notOk('passwordHash' in res.body.user, 'no hash in the answer')
    const expiresIn = res.body.expiresAt - Date.now()
    t.ok(expiresIn > 10 * 60_000 && expiresIn <= 15 * 60_000, `access token lives ${Math.round(expiresIn / 1000)} s`)
    const header = JSON.parse(Buffer.from(res.body.token.split('.')[0], 'base64url').toString())
    t.match(header, { alg: 'EdDSA', typ: ACCESS_TOKEN_TYP })
    const ops = await login('ops', PASSWORDS.ops)
    t.same(ops.body.services, ['nodes', 'logs', 'predict', 'notifications'], 'an operator gets its services')
    const me = await client.request('GET', '/api/v1/auth/me', { token: res.body.token })
    t.equal(me.status, 200)
    t.match(me.body, { kind: 'user', name: 'admin', roles: ['admin'] })
  })

  await t.test('login failure: the same 401 for a wrong password and an unknown user', async t => {
    const wrong = await login('dev', 'not-the-password')
    const unknown = await login('nobody-here', 'not-the-password')
    t.equal(wrong.status, 401)
    t.equal(unknown.status, 401)
    t.same(wrong.body, unknown.body, 'identical bodies: no user enumeration')
    t.same(wrong.body, { error: 'Unauthorized', code: 'ERR_BAD_CREDENTIALS', message: 'username or password is wrong' })
  })

  await t.test('tokens that must not work', async t => {
    const { body: session } = await login('admin', PASSWORDS.admin)
    const [h, p, s] = session.token.split('.')
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString())
    const cases: Array<[string, string | undefined, string]> = [
      ['no token', undefined, 'ERR_UNAUTHENTICATED'],
      ['garbage', 'not-a-jwt', 'ERR_TOKEN_INVALID'],
      ['tampered payload (roles)', `${h}.${b64({ ...claims, roles: ['admin', 'operator'] })}.${s}`, 'ERR_TOKEN_INVALID'],
      ['tampered signature', `${h}.${p}.${s.slice(0, -4)}AAAA`, 'ERR_TOKEN_INVALID'],
      ['alg: none', `${b64({ alg: 'none', typ: ACCESS_TOKEN_TYP })}.${p}.`, 'ERR_TOKEN_INVALID'],
      ['signed by another key', await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN_TYP }).sign(generateKeyPairSync('ed25519').privateKey), 'ERR_TOKEN_INVALID'],
      ['HS256 with the public key as secret', await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: ACCESS_TOKEN_TYP }).sign(coordinator.jwtKey.publicKey.export({ type: 'spki', format: 'der' })), 'ERR_TOKEN_INVALID'],
      ['expired', await new SignJWT({ ...claims, iat: claims.iat - 3600, exp: Math.floor(Date.now() / 1000) - 60 }).setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN_TYP }).sign(coordinator.jwtKey.privateKey), 'ERR_TOKEN_EXPIRED'],
      ['another audience', await new SignJWT({ ...claims, aud: 'elsewhere' }).setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN_TYP }).sign(coordinator.jwtKey.privateKey), 'ERR_TOKEN_INVALID'],
      ['a refresh token as bearer', session.refreshToken, 'ERR_TOKEN_INVALID'],
      ['an unknown API token', `gmt_${'A'.repeat(16)}.${'B'.repeat(43)}`, 'ERR_TOKEN_INVALID']
    ]
    t.equal(claims.iss, ISSUER)
    t.equal(claims.aud, AUDIENCE)
    for (const [name, token, code] of cases) {
      const res = await client.request('GET', '/api/v1/nodes', token == null ? {} : { token })
      t.equal(res.status, 401, `${name}: 401`)
      t.equal(res.body?.code, code, `${name}: ${code}`)
      t.match(res.headers['www-authenticate'], /^Bearer/, `${name}: WWW-Authenticate`)
    }
    const scheme = await client.request('GET', '/api/v1/nodes', { headers: { authorization: `Basic ${Buffer.from('admin:x').toString('base64')}` } })
    t.equal(scheme.status, 401, 'basic auth is not a bearer token')
    t.equal((await client.request('GET', '/api/v1/nodes', { token: session.token })).status, 200, 'the genuine token works')
  })

  await t.test('a role calling a service it lacks gets 403', async t => {
    const ops = (await login('ops', PASSWORDS.ops)).body.token
    const dev = (await login('dev', PASSWORDS.dev)).body.token
    const users = await client.request('GET', '/api/v1/users', { token: ops })
    t.equal(users.status, 403)
    t.equal(users.body.code, 'ERR_FORBIDDEN')
    t.match(users.body.message, /users service/)
    t.equal((await client.request('GET', '/api/v1/users', { token: dev })).status, 403, 'developers manage no users')
    t.equal((await client.request('POST', '/api/v1/enrollments', { token: dev, body: { role: 'gateway' } })).status, 403, 'enrollment is for admins')
    t.equal((await client.request('GET', '/api/v1/nodes', { token: ops })).status, 200, 'operators see nodes')
    t.equal((await client.request('GET', '/api/v1/logs', { token: dev })).status, 200, 'developers search logs')
  })

  await t.test('malformed bodies and queries: 400 naming the field', async t => {
    const admin = (await login('admin', PASSWORDS.admin)).body.token
    const cases: Array<[string, string, { body?: unknown, raw?: string, token?: string }, string | undefined]> = [
      ['POST', '/api/v1/auth/login', { body: { username: 'admin', password: 'x', remember: true } }, 'body.remember'],
      ['POST', '/api/v1/auth/login', { body: { username: 'admin' } }, 'body.password'],
      ['POST', '/api/v1/auth/login', { body: { username: 42, password: 'x' } }, 'body.username'],
      ['POST', '/api/v1/auth/login', { raw: '{"username":' }, undefined],
      ['POST', '/api/v1/users', { token: admin, body: { username: 'eve', password: 'long-enough-1', roles: ['root'] } }, 'body.roles.0'],
      ['POST', '/api/v1/users', { token: admin, body: { username: 'Eve!', password: 'long-enough-1', roles: ['operator'] } }, 'body.username'],
      ['POST', '/api/v1/users', { token: admin, body: { username: 'eve', password: 'short', roles: ['operator'] } }, 'body.password'],
      ['PATCH', '/api/v1/users/dev', { token: admin, body: {} }, 'body'],
      ['POST', '/api/v1/tokens', { token: admin, body: { name: 'ci', roles: ['developer'], scope: 'all' } }, 'body.scope'],
      ['POST', '/api/v1/enrollments', { token: admin, body: { role: 'coordinator' } }, 'body.role'],
      ['POST', '/api/v1/enrollments', { token: admin, body: { role: 'gateway', labels: { 'bad key!': 'x' } } }, 'body.labels'],
      ['GET', '/api/v1/nodes?colour=red', { token: admin }, 'querystring.colour'],
      ['GET', '/api/v1/nodes?state=sleeping', { token: admin }, 'querystring.state'],
      ['GET', '/api/v1/logs?limit=5000', { token: admin }, 'querystring.limit'],
      ['GET', '/api/v1/logs?since=yesterday', { token: admin }, 'querystring.since'],
      ['GET', '/api/v1/logs?since=2h&until=3h', { token: admin }, 'querystring.since'],
      ['GET', '/api/v1/users?page=2', { token: admin }, 'querystring.page']
    ]
    for (const [method, url, options, field] of cases) {
      const res = await client.request(method, url, options)
      t.equal(res.status, 400, `${method} ${url} ${JSON.stringify(options.body ?? options.raw)}: 400`)
      if (field != null) t.equal(res.body.field?.startsWith(field), true, `names ${field} (got ${res.body.field})`)
      t.type(res.body.message, 'string')
    }
    t.equal((await client.request('GET', '/healthz')).status, 200, 'the server is still up')
  })

  await t.test('refresh tokens rotate; a reused one revokes the login', async t => {
    const first = (await login('dev', PASSWORDS.dev)).body
    const second = await client.request('POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } })
    t.equal(second.status, 200)
    t.not(second.body.refreshToken, first.refreshToken, 'a new refresh token')
    t.equal((await client.request('GET', '/api/v1/auth/me', { token: second.body.token })).status, 200)
    const replay = await client.request('POST', '/api/v1/auth/refresh', { body: { refreshToken: first.refreshToken } })
    t.equal(replay.status, 401, 'a used refresh token is refused')
    const after = await client.request('POST', '/api/v1/auth/refresh', { body: { refreshToken: second.body.refreshToken } })
    t.equal(after.status, 401, 'and its whole family is revoked')
    const third = (await login('dev', PASSWORDS.dev)).body
    t.equal((await client.request('POST', '/api/v1/auth/logout', { body: { refreshToken: third.refreshToken } })).status, 204)
    t.equal((await client.request('POST', '/api/v1/auth/refresh', { body: { refreshToken: third.refreshToken } })).status, 401, 'logged out')
  })
}

t.test('auth over app.inject() and over real HTTP', async t => {
  const coordinator = await testCoordinator()
  t.teardown(coordinator.close)
  await t.test('inject', async t => { await authSuite(t, injectClient(coordinator.app), coordinator) })
  await t.test('http', async t => { await authSuite(t, await httpClient(coordinator.app), coordinator) })
})

t.test('an access token stops working when it expires', async t => {
  // JWT times are whole seconds: a 4 s token is good for at least 3 s after it is issued
  const coordinator = await testCoordinator({ accessTtlSec: 4 })
  t.teardown(coordinator.close)
  for (const client of [injectClient(coordinator.app), await httpClient(coordinator.app)]) {
    const { body } = await client.request('POST', '/api/v1/auth/login', { body: { username: 'ops', password: PASSWORDS.ops } })
    t.equal((await client.request('GET', '/api/v1/nodes', { token: body.token })).status, 200, `${client.name}: works while fresh`)
    await new Promise(resolve => setTimeout(resolve, 5100))
    const late = await client.request('GET', '/api/v1/nodes', { token: body.token })
    t.equal(late.status, 401, `${client.name}: 401 once expired`)
    t.equal(late.body.code, 'ERR_TOKEN_EXPIRED')
    const renewed = await client.request('POST', '/api/v1/auth/refresh', { body: { refreshToken: body.refreshToken } })
    t.equal((await client.request('GET', '/api/v1/nodes', { token: renewed.body.token })).status, 200, `${client.name}: the refresh flow gives a working token`)
  }
})

t.test('failed logins slow the attacker\'s address, not the owner (429 with Retry-After)', async t => {
  // waits long enough that a busy machine's slow password checks do not outlast them
  const coordinator = await testCoordinator({ loginLimits: { freeAttempts: 3, baseDelayMs: 3000, perAddress: 7, perUser: 100 } })
  t.teardown(coordinator.close)
  const attempt = async (username: string, password: string, from: string) => {
    const res = await coordinator.app.inject({ method: 'POST', url: '/api/v1/auth/login', remoteAddress: from, payload: { username, password } })
    return { status: res.statusCode, headers: res.headers, body: res.json() }
  }
  for (let i = 0; i < 3; i++) t.equal((await attempt('dev', 'wrong-guess', '10.0.0.66')).status, 401)
  const limited = await attempt('dev', PASSWORDS.dev, '10.0.0.66')
  t.equal(limited.status, 429, 'after 3 failures that address waits, even with the right password')
  t.equal(limited.body.code, 'ERR_RATE_LIMITED')
  t.equal(Number(limited.headers['retry-after']), 3, 'Retry-After: the first wait')
  t.equal((await attempt('dev', PASSWORDS.dev, '10.0.0.7')).status, 200, 'the owner from another address is not locked out')
  await new Promise(resolve => setTimeout(resolve, 3100))
  t.equal((await attempt('dev', 'wrong-again', '10.0.0.66')).status, 401, 'after the wait, one more guess')
  const doubled = await attempt('dev', 'and-again', '10.0.0.66')
  t.equal(doubled.status, 429)
  t.equal(Number(doubled.headers['retry-after']), 6, 'and then twice as long')
  t.equal((await attempt('admin', PASSWORDS.admin, '10.0.0.66')).status, 200, 'other users from that address are not locked out')

  // password spraying: one address, many usernames
  for (let i = 0; i < 7; i++) t.equal((await attempt(`ghost${i}`, 'x', '10.0.0.99')).status, 401)
  const byAddress = await attempt('ops', PASSWORDS.ops, '10.0.0.99')
  t.equal(byAddress.status, 429, 'the address is limited after 7 failures, whatever the username')
  t.equal((await attempt('ops', PASSWORDS.ops, '10.0.0.100')).status, 200)
  const metrics = await injectClient(coordinator.app).request('GET', '/metrics', {})
  t.equal(metrics.status, 401, '/metrics needs a token')
})

t.test('a username attacked from many addresses: a ceiling that spares addresses the owner used before', async t => {
  const coordinator = await testCoordinator({ loginLimits: { freeAttempts: 5, perUser: 6, perAddress: 100 } })
  t.teardown(coordinator.close)
  const attempt = async (password: string, from: string): Promise<number> =>
    (await coordinator.app.inject({ method: 'POST', url: '/api/v1/auth/login', remoteAddress: from, payload: { username: 'ops', password } })).statusCode
  t.equal(await attempt(PASSWORDS.ops, '192.168.7.7'), 200, 'the owner logs in from home once')
  for (let i = 0; i < 6; i++) t.equal(await attempt('guess', `203.0.113.${i + 1}`), 401)
  t.equal(await attempt(PASSWORDS.ops, '203.0.113.50'), 429, 'past the ceiling, a new address waits')
  t.equal(await attempt(PASSWORDS.ops, '192.168.7.7'), 200, 'the owner\'s known address still gets in')
})

t.test('user management: CRUD, disabling ends sessions, the last admin stays', async t => {
  const coordinator = await testCoordinator()
  t.teardown(coordinator.close)
  const client = injectClient(coordinator.app)
  const admin = (await client.request('POST', '/api/v1/auth/login', { body: { username: 'admin', password: PASSWORDS.admin } })).body.token
  const created = await client.request('POST', '/api/v1/users', { token: admin, body: { username: 'carol', password: 'carols-password', roles: ['operator'] } })
  t.equal(created.status, 201)
  t.equal((await client.request('POST', '/api/v1/users', { token: admin, body: { username: 'carol', password: 'carols-password', roles: ['operator'] } })).status, 409, 'no duplicates')
  t.same((await client.request('GET', '/api/v1/users', { token: admin })).body.users.map((u: any) => u.username), ['admin', 'carol', 'dev', 'ops'])
  const carol = (await client.request('POST', '/api/v1/auth/login', { body: { username: 'carol', password: 'carols-password' } })).body
  t.equal((await client.request('GET', '/api/v1/nodes', { token: carol.token })).status, 200)
  const promoted = await client.request('PATCH', '/api/v1/users/carol', { token: admin, body: { roles: ['developer'] } })
  t.same(promoted.body.roles, ['developer'])
  t.equal((await client.request('GET', '/api/v1/nodes', { token: carol.token })).status, 401, 'a role change ends the old session at once')
  t.equal((await client.request('POST', '/api/v1/auth/refresh', { body: { refreshToken: carol.refreshToken } })).status, 401, 'and its refresh token')
  await client.request('PATCH', '/api/v1/users/carol', { token: admin, body: { disabled: true } })
  t.equal((await client.request('POST', '/api/v1/auth/login', { body: { username: 'carol', password: 'carols-password' } })).status, 401, 'a disabled user cannot log in')
  t.equal((await client.request('DELETE', '/api/v1/users/carol', { token: admin })).status, 204)
  t.equal((await client.request('GET', '/api/v1/users/carol', { token: admin })).status, 404)
  const last = await client.request('DELETE', '/api/v1/users/admin', { token: admin })
  t.equal(last.status, 409, 'the last admin cannot be deleted')
  t.equal((await client.request('PATCH', '/api/v1/users/admin', { token: admin, body: { roles: ['operator'] } })).status, 409, 'nor demoted')

  const changed = await client.request('POST', '/api/v1/auth/password', { token: (await client.request('POST', '/api/v1/auth/login', { body: { username: 'dev', password: PASSWORDS.dev } })).body.token, body: { currentPassword: PASSWORDS.dev, newPassword: 'a-new-dev-password' } })
  t.equal(changed.status, 204, 'users change their own password')
  t.equal((await client.request('POST', '/api/v1/auth/login', { body: { username: 'dev', password: 'a-new-dev-password' } })).status, 200)
})

t.test('API tokens for machines: scoped by role, shown once, revocable', async t => {
  const coordinator = await testCoordinator()
  t.teardown(coordinator.close)
  const client = injectClient(coordinator.app)
  const admin = (await client.request('POST', '/api/v1/auth/login', { body: { username: 'admin', password: PASSWORDS.admin } })).body.token
  const created = await client.request('POST', '/api/v1/tokens', { token: admin, body: { name: 'prometheus', roles: ['operator'] } })
  t.equal(created.status, 201)
  t.match(created.body.token, /^gmt_/)
  const machine = created.body.token
  t.equal((await client.request('GET', '/api/v1/nodes', { token: machine })).status, 200)
  t.equal((await client.request('GET', '/api/v1/users', { token: machine })).status, 403, 'an operator token cannot manage users')
  const metrics = await client.request('GET', '/metrics', { token: machine })
  t.equal(metrics.status, 200)
  t.match(metrics.text, /gatemesh_coordinator_logins_total/)
  const listed = (await client.request('GET', '/api/v1/tokens', { token: admin })).body.tokens
  t.equal(listed.length, 1)
  t.notOk('hash' in listed[0], 'no secret or hash is listed')
  t.ok(listed[0].lastUsedAt > 0, 'last use is tracked')
  t.equal((await client.request('DELETE', `/api/v1/tokens/${listed[0].id}`, { token: admin })).status, 204)
  t.equal((await client.request('GET', '/api/v1/nodes', { token: machine })).status, 401, 'revoked')
})
