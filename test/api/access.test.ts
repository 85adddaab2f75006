import t from 'tap'
import { buildApi, type AgentView } from '../../node/api/server.ts'
import { newApiToken } from '../../node/identity/api-token.ts'
import { AgentMetrics } from '../../node/metrics/metrics.ts'

// Who may call which route of the agent API, through app.inject(): every
// route that changes state needs the node's token, whoever calls; reads are
// open to this machine only. test/security/local-api.test.ts does the same
// against real agent processes.

const TOKEN = newApiToken()
const calls: string[] = []
const record = (what: string) => async (..._args: unknown[]): Promise<any> => { calls.push(what); return {} }
const agent: AgentView = {
  peerId: 'self',
  role: 'gateway',
  labels: {},
  version: 'test',
  startedAt: Date.now(),
  addresses: () => [],
  members: () => [],
  registry: { list: () => [], get: () => undefined, set: record('registry.set'), delete: record('registry.delete'), onChange: () => () => {}, size: 0, revocations: () => [], stampFor: (key: string) => ({ key, writer: 'self', ts: [0, 0] }) },
  metrics: new AgentMetrics(),
  deniedPeers: () => [],
  local: {
    runtime: { list: () => [], run: record('runtime.run'), stopInstance: record('runtime.stop'), backend: 'cpu', backends: () => ({}) } as any,
    devices: { state: () => [] } as any,
    outbox: { size: 0, pending: () => [], dead: async () => [], retryDead: record('outbox.retry') } as any
  },
  scheduling: {
    election: { leader: () => undefined, zone: 'default', isLeader: () => false } as any,
    control: { setDrained: record('drain'), setExcluded: record('evict'), state: { drained: false, excluded: [] } } as any,
    parseOptions: {}
  },
  bundles: { list: () => [], get: record('bundles.get'), publish: record('bundles.publish'), pull: () => ({ state: 'complete' }), waitFor: record('bundles.wait'), store: { tempPath: () => '/nonexistent' }, maxUploadBytes: 1024 } as any
}
const app = await buildApi(agent, { token: TOKEN })
// a route added by someone who forgot about access: it must be protected all the same
app.post('/v1/some-new-action', async () => { calls.push('new-action'); return { done: true } })
t.teardown(async () => { await app.close() })

const id = 'a'.repeat(64)
const WRITES: Array<{ method: 'PUT' | 'POST' | 'DELETE', url: string, payload?: unknown, headers?: Record<string, string> }> = [
  { method: 'PUT', url: '/v1/registry/instance/self/x', payload: { value: 1 } },
  { method: 'DELETE', url: '/v1/registry/instance/self/x' },
  { method: 'POST', url: '/v1/drain' },
  { method: 'POST', url: '/v1/undrain' },
  { method: 'POST', url: '/v1/deployments/d1/evict' },
  { method: 'DELETE', url: '/v1/deployments/d1/evict' },
  { method: 'PUT', url: '/v1/deployments/d1', payload: { spec: {}, auth: 'x'.repeat(20) } },
  { method: 'DELETE', url: '/v1/deployments/d1', payload: { auth: 'x'.repeat(20) } },
  { method: 'POST', url: '/v1/instances', payload: { bundle: id } },
  { method: 'DELETE', url: '/v1/instances/anomaly' },
  { method: 'POST', url: '/v1/bundles', payload: 'PK', headers: { 'content-type': 'application/zip' } },
  { method: 'POST', url: `/v1/bundles/${id}/pull` },
  { method: 'POST', url: '/v1/outbox/dead/job-1/retry' },
  { method: 'POST', url: '/v1/some-new-action' }
]

t.test('every state change without the token is 401, and nothing happens', async t => {
  for (const w of WRITES) {
    const res = await app.inject(w as any)
    t.equal(res.statusCode, 401, `${w.method} ${w.url}`)
    t.equal(res.json().code, 'ERR_UNAUTHENTICATED')
    t.match(res.json().message, /api\.token/, 'the answer says where the token is')
    t.equal(res.headers['www-authenticate'], 'Bearer realm="gatemesh-agent"')
  }
  t.same(calls, [], 'no handler ran')
})

t.test('a wrong token is 401 too', async t => {
  for (const bad of [newApiToken(), TOKEN.slice(0, -1), '', `${TOKEN}x`]) {
    const res = await app.inject({ method: 'POST', url: '/v1/drain', headers: { authorization: `Bearer ${bad}` } })
    t.equal(res.statusCode, 401)
  }
  const basic = await app.inject({ method: 'POST', url: '/v1/drain', headers: { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` } })
  t.equal(basic.statusCode, 401, 'only Bearer')
  t.same(calls, [])
})

t.test('with the token the same requests reach their handlers', async t => {
  for (const w of WRITES) {
    const res = await app.inject({ ...w, headers: { ...w.headers, authorization: `Bearer ${TOKEN}` } } as any)
    t.not(res.statusCode, 401, `${w.method} ${w.url}: ${res.statusCode}`)
    t.not(res.statusCode, 403, `${w.method} ${w.url}`)
  }
  t.ok(calls.includes('drain') && calls.includes('evict') && calls.includes('registry.set') && calls.includes('new-action') && calls.includes('outbox.retry'), calls.join(' '))
  calls.length = 0
})

t.test('reads are open to this machine, predict included', async t => {
  for (const url of ['/healthz', '/v1/status', '/v1/registry', '/v1/deployments', '/v1/control', '/v1/instances', '/v1/outbox', '/v1/bundles', '/metrics']) {
    t.equal((await app.inject(url)).statusCode, 200, url)
  }
  const predict = await app.inject({ method: 'POST', url: '/v1/models/nope:predict', payload: { instances: [[1]] } })
  t.not(predict.statusCode, 401, 'TF Serving clients send no token')
})

t.test('from another machine, everything but /healthz needs the token', async t => {
  const remote = { remoteAddress: '192.168.1.20' }
  t.equal((await app.inject({ url: '/healthz', ...remote })).statusCode, 200)
  for (const url of ['/v1/status', '/v1/registry', '/metrics']) {
    t.equal((await app.inject({ url, ...remote })).statusCode, 401, url)
    t.equal((await app.inject({ url, ...remote, headers: { authorization: `Bearer ${TOKEN}` } })).statusCode, 200, `${url} with the token`)
  }
  t.equal((await app.inject({ method: 'POST', url: '/v1/models/nope:predict', payload: {}, ...remote })).statusCode, 401)
  t.equal((await app.inject({ url: '/v1/status', remoteAddress: '::ffff:127.0.0.1' })).statusCode, 200, 'IPv4-mapped loopback is local')
})

t.test('a web page cannot read the loopback API under another name (DNS rebinding)', async t => {
  const res = await app.inject({ url: '/v1/status', headers: { host: 'attacker.example:7401' } })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'ERR_FORBIDDEN_HOST')
  for (const host of ['127.0.0.1:7401', 'localhost:7401', '[::1]:7401', 'localhost']) {
    t.equal((await app.inject({ url: '/v1/status', headers: { host } })).statusCode, 200, host)
  }
})
