import t from 'tap'
import { buildApi } from '../../node/api/server.ts'
import { newApiToken } from '../../node/identity/api-token.ts'
import { AgentMetrics } from '../../node/metrics/metrics.ts'
import { authorizeRegistryWrite } from '../../packaging/trust.ts'
import { MemoryMesh } from '../helpers/memory-mesh.ts'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'

const mesh = new MemoryMesh()
const member = await mesh.add()
await mesh.introduce()
await member.registry.start()
t.teardown(async () => { await member.registry.stop() })
const self = member.peerId.toString()
const TOKEN = newApiToken()
const app = await buildApi({
  peerId: self,
  role: 'gateway',
  labels: { zone: 'a' },
  version: 'test',
  startedAt: Date.now(),
  addresses: () => ['/ip4/127.0.0.1/tcp/1'],
  members: () => [],
  registry: member.registry,
  metrics: new AgentMetrics(),
  deniedPeers: () => []
}, { bodyLimit: 4096, token: TOKEN })
t.teardown(async () => { await app.close() })
/** app.inject with the node's API token: these tests are about the routes, test/api/access.test.ts about who may call them */
const inject = async (opts: string | InjectOptions): Promise<LightMyRequestResponse> => {
  const o: InjectOptions = typeof opts === 'string' ? { url: opts } : opts
  return await app.inject({ ...o, headers: { authorization: `Bearer ${TOKEN}`, ...o.headers } })
}

t.test('health, status and metrics', async t => {
  t.same((await inject('/healthz')).json(), { ok: true, peerId: self })
  const status = (await inject('/v1/status')).json()
  t.equal(status.self.peerId, self)
  t.same(status.self.labels, { zone: 'a' })
  const metrics = await inject('/metrics')
  t.equal(metrics.statusCode, 200)
  t.match(metrics.body, /gatemesh_registry_keys/)
  t.match(metrics.headers['content-type'], /text\/plain/)
})

t.test('registry reads and writes', async t => {
  const key = `instance/${self}/api`
  t.equal((await inject({ method: 'GET', url: `/v1/registry/${key}` })).statusCode, 404)
  const put = await inject({ method: 'PUT', url: `/v1/registry/${key}`, payload: { value: { a: 1 } } })
  t.equal(put.statusCode, 200)
  t.same(put.json().value, { a: 1 })
  t.same((await inject(`/v1/registry/${key}`)).json().value, { a: 1 })
  const list = (await inject(`/v1/registry?prefix=instance/${self}/`)).json()
  t.equal(list.count, 1)
  t.equal((await inject({ method: 'DELETE', url: `/v1/registry/${key}` })).statusCode, 200)
  t.equal((await inject(`/v1/registry?prefix=instance/${self}/`)).json().count, 0)
  t.equal((await inject(`/v1/registry?prefix=instance/${self}/&tombstones=true`)).json().count, 1)

  const value = { replicas: 1 }
  const authorize = async (valueJson: string | null): Promise<string> => {
    const stamp = (await inject('/v1/write-stamp?key=deployment/x')).json()
    t.equal(stamp.writer, self, 'the stamp names this agent as the writer')
    return await authorizeRegistryWrite({ key: 'deployment/x', valueJson, writer: stamp.writer, ts: stamp.ts }, { key: mesh.fleet.privateKey })
  }
  const auth = await authorize(JSON.stringify(value))
  t.equal((await inject({ method: 'PUT', url: '/v1/registry/deployment/x', payload: { value, auth } })).statusCode, 200)
  t.equal((await inject({ method: 'PUT', url: '/v1/registry/deployment/x', payload: { value, auth } })).statusCode, 200, 'the same authorisation again changes nothing')
  const del = await authorize(null)
  t.equal((await inject({ method: 'DELETE', url: '/v1/registry/deployment/x', payload: { auth: del } })).statusCode, 200)
  const replay = await inject({ method: 'PUT', url: '/v1/registry/deployment/x', payload: { value, auth } })
  t.equal(replay.statusCode, 409, 'replaying the old authorisation is refused')
  t.equal(replay.json().code, 'ERR_STALE_WRITE')
  t.equal((await inject('/v1/registry/deployment/x')).json().deleted, true, 'deleted stays deleted')
  t.equal((await inject('/v1/write-stamp?key=../x')).statusCode, 400, 'a stamp only for a valid key')
})

t.test('bad requests name the problem', async t => {
  const key = `instance/${self}/bad`
  const extra = await inject({ method: 'PUT', url: `/v1/registry/${key}`, payload: { value: 1, colour: 'red' } })
  t.equal(extra.statusCode, 400)
  t.equal(extra.json().field, 'body.colour')
  const missing = await inject({ method: 'PUT', url: `/v1/registry/${key}`, payload: { auth: 'x'.repeat(20) } })
  t.equal(missing.statusCode, 400)
  t.equal(missing.json().field, 'body.value')
  const notJson = await inject({ method: 'PUT', url: `/v1/registry/${key}`, payload: '{"value":', headers: { 'content-type': 'application/json' } })
  t.equal(notJson.statusCode, 400)
  const query = await inject('/v1/registry?prefx=node/')
  t.equal(query.statusCode, 400)
  t.equal(query.json().field, 'querystring.prefx')
  const dots = await inject({ method: 'PUT', url: `/v1/registry/instance/${self}/%2E%2E`, payload: { value: 1 } })
  t.equal(dots.statusCode, 400, 'a key with a .. segment')
  t.equal(dots.json().code, 'ERR_INVALID_VALUE')
  const space = await inject({ method: 'PUT', url: `/v1/registry/instance/${self}/a%20b`, payload: { value: 1 } })
  t.equal(space.statusCode, 400, 'a key with a space')
  const foreign = await inject({ method: 'PUT', url: '/v1/registry/node/12D3KooWSomeoneElse', payload: { value: 1 } })
  t.equal(foreign.statusCode, 403)
  t.equal(foreign.json().code, 'ERR_UNAUTHORIZED_WRITE')
  const forged = await inject({ method: 'PUT', url: '/v1/registry/deployment/y', payload: { value: 1, auth: 'eyJhbGciOiJub25lIn0.e30.' } })
  t.equal(forged.statusCode, 403)
  const big = await inject({ method: 'PUT', url: `/v1/registry/${key}`, payload: { value: 'x'.repeat(5000) } })
  t.equal(big.statusCode, 413)
  const delBody = await inject({ method: 'DELETE', url: `/v1/registry/${key}`, payload: { nope: 1 } })
  t.equal(delBody.statusCode, 400)
  t.equal(delBody.json().field, 'body.nope')
})
