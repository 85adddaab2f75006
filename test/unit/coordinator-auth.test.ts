import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { AccessTokens } from '../../coordinator/auth/access-tokens.ts'
import { generatePassword, hashPassword, verifyPassword } from '../../coordinator/auth/passwords.ts'
import { servicesOf, SERVICES } from '../../coordinator/auth/roles.ts'
import { newOpaqueToken, parseOpaqueToken, secretMatches } from '../../coordinator/auth/secrets.ts'

// cheap parameters: these tests are about the format, not the cost
const FAST = { N: 2 ** 10, r: 8, p: 1 }

t.test('passwords: salted scrypt with its parameters in the hash', async t => {
  const a = await hashPassword('correct horse battery', FAST)
  const b = await hashPassword('correct horse battery', FAST)
  t.match(a, /^scrypt\$1024\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/)
  t.not(a, b, 'a fresh salt every time')
  t.ok(await verifyPassword('correct horse battery', a))
  t.notOk(await verifyPassword('correct horse batterY', a))
  t.notOk(await verifyPassword('correct horse battery', 'scrypt$1024$8$1$AAAA$BBBB'), 'a malformed hash never verifies')
  t.notOk(await verifyPassword('x', 'plaintext'), 'nor does a non-scrypt one')
  t.ok(await verifyPassword('ﬁle-password', await hashPassword('file-password', FAST)), 'compared after NFKC normalisation')
  const generated = new Set(Array.from({ length: 50 }, generatePassword))
  t.equal(generated.size, 50)
  t.ok([...generated].every(p => /^[A-HJ-NP-Za-km-z2-9]{20}$/.test(p)), 'generated passwords avoid look-alike characters')
})

t.test('opaque tokens: only the hash is kept, the prefix says what it is', async t => {
  const { id, token, hash } = newOpaqueToken('api')
  t.match(token, /^gmt_[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}$/)
  const parsed = parseOpaqueToken(token, 'api')
  t.equal(parsed?.id, id)
  t.ok(secretMatches(parsed!.secret, hash))
  t.notOk(token.includes(hash), 'the stored hash is not in the token')
  t.equal(parseOpaqueToken(token, 'refresh'), undefined, 'an API token is not a refresh token')
  t.equal(parseOpaqueToken(`${token}.extra`, 'api'), undefined)
  t.notOk(secretMatches(parsed!.secret.replace(/.$/, c => c === 'A' ? 'B' : 'A'), hash))
})

t.test('roles grant services', async t => {
  t.same(servicesOf(['admin']), [...SERVICES])
  t.same(servicesOf(['developer']), ['models', 'deployments', 'nodes', 'logs', 'predict'])
  t.same(servicesOf(['operator', 'developer']), ['models', 'deployments', 'nodes', 'logs', 'predict', 'notifications'], 'the union, in a stable order')
  t.same(servicesOf(['root']), [], 'unknown roles grant nothing')
})

t.test('access tokens: cached verification is bounded and still honours expiry', async t => {
  let now = 1_800_000_000
  const keys = generateKeyPairSync('ed25519')
  const tokens = new AccessTokens(keys, { ttlSec: 60, cacheSize: 2, now: () => now })
  const a = await tokens.issue({ username: 'a', roles: ['operator'], tokenVersion: 3 })
  t.equal(a.expiresAt, (now + 60) * 1000)
  t.match(await tokens.verify(a.token), { sub: 'a', roles: ['operator'], ver: 3 })
  t.match(await tokens.verify(a.token), { sub: 'a' }, 'second time from the cache')
  for (const u of ['b', 'c', 'd']) await tokens.verify((await tokens.issue({ username: u, roles: ['operator'], tokenVersion: 1 })).token)
  t.match(await tokens.verify(a.token), { sub: 'a' }, 'evicted entries are verified again')
  now += 61
  await t.rejects(tokens.verify(a.token), { code: 'ERR_TOKEN_EXPIRED' }, 'a cached token expires on time')
  await t.rejects(tokens.verify(a.token), { code: 'ERR_TOKEN_EXPIRED' }, 'and after eviction too')
  const other = new AccessTokens(generateKeyPairSync('ed25519'), { now: () => now })
  await t.rejects(other.verify((await tokens.issue({ username: 'a', roles: ['admin'], tokenVersion: 1 })).token), { code: 'ERR_TOKEN_INVALID' })
})
