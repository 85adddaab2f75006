import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import t from 'tap'
import { enrollmentProofMessage, joinTokenId } from '../../protocols/enrollment/index.ts'
import { injectClient, PASSWORDS, testCoordinator } from '../helpers/coordinator-app.ts'
import { anomalyUploadForm, multipartPayload } from '../helpers/model-upload.ts'
import { fetchSender, fuzzRoute, injectSender, type RouteCase } from './http.ts'
import { banner, CrashWatch, HEAP_GROWTH_LIMIT, RUNS, settledHeap } from './lib.ts'

/**
 * Every route of the coordinator's HTTP API (the OpenAPI document is the
 * checklist: a route added without a fuzz case fails here), fuzzed through
 * the real app with its real services on a fresh database: bodies, query
 * strings, path parameters and headers mutated from a valid request. No
 * 500, every refusal a JSON error with a code and a message (schema
 * refusals name the field), no uncaught error, the coordinator still
 * answers afterwards, the heap stays bounded.
 */
t.comment(banner('coordinator-api'))
const watch = new CrashWatch()
const coordinator = await testCoordinator()
t.teardown(coordinator.close)
const client = injectClient(coordinator.app)
const login = async (username: string, password: string): Promise<string> => {
  const res = await client.request('POST', '/api/v1/auth/login', { body: { username, password } })
  if (res.status !== 200) throw new Error(`login ${username}: ${res.status} ${res.text}`)
  return res.body.token
}
const admin = await login('admin', PASSWORDS.admin)
const auth = { authorization: `Bearer ${admin}` }
// the password route changes its caller's password: a user of its own, so the admin's token stays good
await client.request('POST', '/api/v1/users', { token: admin, body: { username: 'pw', password: 'pw-password-1', roles: ['developer'] } })
const pwToken = await login('pw', 'pw-password-1')
const refresh = (await client.request('POST', '/api/v1/auth/login', { body: { username: 'dev', password: PASSWORDS.dev } })).body.refreshToken as string

// a real model in the repository, so deployments and model routes reach their services
const upload = await multipartPayload(await anomalyUploadForm())
const uploaded = await coordinator.app.inject({ method: 'POST', url: '/api/v1/models', headers: { ...auth, ...upload.headers }, payload: upload.payload })
if (uploaded.statusCode !== 201) throw new Error(`uploading the model: ${uploaded.statusCode} ${uploaded.body.slice(0, 200)}`)
const second = await multipartPayload(await anomalyUploadForm({ version: '1.0.1' }))

const joinToken = (await client.request('POST', '/api/v1/enrollments', { token: admin, body: { role: 'gateway', labels: { site: 'fuzz' } } })).body.token as string
const deviceKey = await generateKeyPair('Ed25519')
const devicePeer = peerIdFromPrivateKey(deviceKey).toString()
const proof = Buffer.from(await deviceKey.sign(enrollmentProofMessage(joinTokenId(joinToken)!, devicePeer))).toString('base64url')

const base = await coordinator.app.listen({ host: '127.0.0.1', port: 0 })
const inject = injectSender(coordinator.app)
const http = fetchSender(base)
const alive = async (): Promise<boolean> => (await coordinator.app.inject({ url: '/api/v1/auth/me', headers: auth })).statusCode === 200
const heapAtStart = await settledHeap()

const gateway = coordinator.gateway.peerId.toString()
/** a peer id no node has: revoking it changes nothing the other cases rely on */
const STRANGER = '12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo'
const window = Array.from({ length: 16 }, (_, i) => 0.4 + i / 100)
const spec = { id: 'fuzzdep', model: { name: 'anomaly', version: '1.0.0' }, replicas: 1, placement: { policy: 'spread' }, instance: { name: 'fuzzdep' } }

const ROUTES: RouteCase[] = [
  { method: 'POST', url: '/api/v1/auth/login', bodies: [{ username: 'nobody', password: 'wrong-password' }] },
  { method: 'POST', url: '/api/v1/auth/refresh', bodies: [{ refreshToken: refresh }] },
  { method: 'POST', url: '/api/v1/auth/logout', bodies: [{ refreshToken: 'r'.repeat(40) }] },
  { method: 'GET', url: '/api/v1/auth/me' },
  { method: 'POST', url: '/api/v1/auth/password', headers: { authorization: `Bearer ${pwToken}` }, bodies: [{ currentPassword: 'not-the-password', newPassword: 'a-new-password-2' }] },
  { method: 'GET', url: '/api/v1/users' },
  { method: 'POST', url: '/api/v1/users', bodies: [{ username: 'fuzz.user', password: 'fuzz-password-1', roles: ['operator'] }] },
  { method: 'GET', url: '/api/v1/users/dev', params: ['dev'] },
  { method: 'PATCH', url: '/api/v1/users/dev', params: ['dev'], bodies: [{ roles: ['developer'], disabled: false }, { password: 'developer-pass-1' }] },
  { method: 'DELETE', url: '/api/v1/users/ghost', params: ['ghost'] },
  { method: 'GET', url: '/api/v1/tokens' },
  { method: 'POST', url: '/api/v1/tokens', bodies: [{ name: 'ci token', roles: ['operator'], ttlDays: 30 }] },
  { method: 'DELETE', url: '/api/v1/tokens/nope', params: ['nope'] },
  { method: 'GET', url: '/api/v1/nodes', query: { role: 'gateway', state: 'alive', label: 'zone=lab', sensorType: 'temperature' } },
  { method: 'GET', url: `/api/v1/nodes/${gateway}`, params: [gateway] },
  { method: 'GET', url: '/api/v1/revocations' },
  { method: 'GET', url: '/api/v1/logs', query: { level: 'info', since: '15m', text: 'x', order: 'asc', limit: '10', service: 'api' } },
  { method: 'GET', url: '/api/v1/logs/download', query: { level: 'warn', until: '2030-01-01T00:00:00Z', limit: '100' } },
  { method: 'GET', url: '/api/v1/events', stream: true },
  { method: 'GET', url: '/api/v1/monitoring/gateways' },
  { method: 'GET', url: '/api/v1/monitoring/models' },
  { method: 'GET', url: '/api/v1/models', query: { owner: 'admin' } },
  { method: 'POST', url: '/api/v1/models', raw: second },
  { method: 'GET', url: '/api/v1/models/anomaly/versions', params: ['anomaly'] },
  { method: 'GET', url: '/api/v1/models/anomaly/versions/1.0.0', params: ['anomaly', '1.0.0'] },
  { method: 'GET', url: '/api/v1/models/anomaly/versions/1.0.0/bundle', params: ['anomaly', '1.0.0'] },
  { method: 'POST', url: '/api/v1/models/anomaly:predict', params: ['anomaly:predict'], bodies: [{ instances: [window] }, { inputs: { window: [window] }, signature_name: 'serving_default' }] },
  { method: 'POST', url: '/api/v1/models/anomaly/versions/1.0.0:predict', params: ['anomaly', '1.0.0:predict'], bodies: [{ instances: [window] }] },
  { method: 'POST', url: '/api/v1/deployments', bodies: [spec, { ...spec, id: 'other', replicas: 2, placement: { policy: 'pin', nodes: [gateway] } }] },
  { method: 'GET', url: '/api/v1/deployments' },
  { method: 'GET', url: '/api/v1/deployments/fuzzdep', params: ['fuzzdep'] },
  { method: 'DELETE', url: '/api/v1/deployments/gone', params: ['gone'] },
  { method: 'POST', url: '/api/v1/enrollments', bodies: [{ role: 'gateway', labels: { site: 'x' }, ttlSec: 3600, certValidDays: 30 }] },
  { method: 'GET', url: '/api/v1/enrollments' },
  { method: 'DELETE', url: '/api/v1/enrollments/nope', params: ['nope'] },
  { method: 'POST', url: '/api/v1/enroll', bodies: [{ token: joinToken, peerId: devicePeer, role: 'gateway', labels: { site: 'fuzz' }, proof }] },
  { method: 'GET', url: '/metrics' },
  { method: 'GET', url: '/healthz' },
  { method: 'POST', url: `/api/v1/nodes/${STRANGER}/revoke`, params: [STRANGER], bodies: [{ reason: 'fuzz' }] }
]

t.test('every documented route has a fuzz case', async t => {
  const doc = (await client.request('GET', '/docs/json')).body
  const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, ops]) => Object.keys(ops).map(m => `${m.toUpperCase()} ${path}`))
  const fuzzed = new Set(ROUTES.map(r => `${r.method} ${templateOf(r)}`))
  t.same(documented.filter(d => !fuzzed.has(d)), [], 'routes in the OpenAPI document without a fuzz case')
})

/** The OpenAPI path of a case: its parameters back as {name}. */
function templateOf (r: RouteCase): string {
  const doc: Record<string, string> = {
    '/api/v1/users/dev': '/api/v1/users/{username}',
    '/api/v1/users/ghost': '/api/v1/users/{username}',
    '/api/v1/tokens/nope': '/api/v1/tokens/{id}',
    [`/api/v1/nodes/${gateway}`]: '/api/v1/nodes/{peerId}',
    [`/api/v1/nodes/${STRANGER}/revoke`]: '/api/v1/nodes/{peerId}/revoke',
    '/api/v1/models/anomaly/versions': '/api/v1/models/{name}/versions',
    '/api/v1/models/anomaly/versions/1.0.0': '/api/v1/models/{name}/versions/{version}',
    '/api/v1/models/anomaly/versions/1.0.0/bundle': '/api/v1/models/{name}/versions/{version}/bundle',
    '/api/v1/models/anomaly:predict': '/api/v1/models/{target}',
    '/api/v1/models/anomaly/versions/1.0.0:predict': '/api/v1/models/{name}/versions/{target}',
    '/api/v1/deployments/fuzzdep': '/api/v1/deployments/{id}',
    '/api/v1/deployments/gone': '/api/v1/deployments/{id}',
    '/api/v1/enrollments/nope': '/api/v1/enrollments/{id}'
  }
  return doc[r.url] ?? r.url
}


for (const route of ROUTES) {
  t.test(`${route.method} ${route.url}`, async t => {
    const problems = await fuzzRoute(route, { auth, alive, send: route.stream === true ? http : inject })
    t.same(problems, [], `${RUNS} hostile requests: no 500, every refusal a coded JSON error naming the field, the coordinator still answers`)
  })
}

t.test('the coordinator survived and memory stayed bounded', async t => {
  watch.stop()
  t.same(watch.crashes, [], 'no uncaught exception or unhandled rejection')
  t.ok(await alive(), 'the coordinator answers')
  const growth = await settledHeap() - heapAtStart
  t.comment(`heap growth: ${(growth / 1024 / 1024).toFixed(1)} MiB`)
  t.ok(growth < HEAP_GROWTH_LIMIT, `heap grew ${(growth / 1024 / 1024).toFixed(1)} MiB (limit ${HEAP_GROWTH_LIMIT / 1024 / 1024} MiB)`)
})
