import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import t from 'tap'
import { verifyNodeCertificate } from '../../node/identity/certificate.ts'
import { enrollmentProofMessage, joinTokenId } from '../../protocols/enrollment/index.ts'
import { waitFor } from '../helpers/cluster.ts'
import { httpClient, injectClient, PASSWORDS, testCoordinator } from '../helpers/coordinator-app.ts'

const coordinator = await testCoordinator()
t.teardown(coordinator.close)
const client = injectClient(coordinator.app)
const http = await httpClient(coordinator.app)
const token = async (username: keyof typeof PASSWORDS | 'admin', password: string): Promise<string> =>
  (await client.request('POST', '/api/v1/auth/login', { body: { username, password } })).body.token
const admin = await token('admin', PASSWORDS.admin)
const ops = await token('ops', PASSWORDS.ops)
const gatewayId = coordinator.gateway.peerId.toString()
const selfId = coordinator.self.peerId.toString()

t.test('every API route is authenticated and documented', async t => {
  const doc = (await client.request('GET', '/docs/json')).body
  t.equal(doc.openapi, '3.0.3')
  const operations = Object.entries(doc.paths as Record<string, Record<string, any>>)
    .flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method: method.toUpperCase(), op })))
    .filter(o => o.path.startsWith('/api/v1/'))
  t.ok(operations.length >= 20, `${operations.length} API operations in the OpenAPI document`)
  const open = operations.filter(o => o.op.security == null).map(o => `${o.method} ${o.path}`).sort()
  t.same(open, ['POST /api/v1/auth/login', 'POST /api/v1/auth/logout', 'POST /api/v1/auth/refresh', 'POST /api/v1/enroll'], 'only login, refresh, logout and enroll are public')
  for (const { path, method } of operations.filter(o => o.op.security != null)) {
    const url = path.replace('{username}', 'dev').replace('{id}', 'x').replace('{peerId}', gatewayId)
    const res = await client.request(method, url, method === 'GET' || method === 'DELETE' ? {} : { body: {} })
    t.equal(res.status, 401, `${method} ${path} without a token: 401`)
  }
  for (const o of operations) {
    const query = (o.op.parameters ?? []).filter((p: any) => p.in === 'query')
    t.ok(Array.isArray(o.op.parameters) || query.length === 0, `${o.method} ${o.path} documents its parameters`)
  }
})

t.test('OpenAPI UI and dashboard are served from here, with no CDN', async t => {
  const ui = await http.request('GET', '/docs/static/index.html')
  t.equal(ui.status, 200)
  t.notMatch(ui.text, /https?:\/\/(?!localhost)[a-z]/i, 'the Swagger UI page loads nothing from elsewhere')
  const page = await http.request('GET', '/')
  t.equal(page.status, 200)
  t.match(page.headers['content-type'], /text\/html/)
  t.match(page.headers['content-security-policy'], /default-src 'self'/)
  t.notMatch(page.text, /https?:\/\//, 'the dashboard references no other host')
  const js = await http.request('GET', '/app.js')
  t.equal(js.status, 200)
  t.notMatch(js.text, /https?:\/\//)
  t.equal((await http.request('GET', '/api/v1/nope', { token: admin })).status, 404)
})

t.test('nodes: role, labels, state, health and sensors with type and geo', async t => {
  await waitFor(async () => {
    const list = (await client.request('GET', '/api/v1/nodes', { token: ops })).body
    return list.nodes.find((n: any) => n.peerId === gatewayId)?.state === 'alive' && list.nodes.find((n: any) => n.peerId === gatewayId)?.health != null
  }, 'the gateway to be alive in the nodes view', 10_000)
  const res = await http.request('GET', '/api/v1/nodes', { token: ops })
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /application\/json/)
  t.equal(res.body.count, 2)
  const gw = res.body.nodes.find((n: any) => n.peerId === gatewayId)
  t.match(gw, { role: 'gateway', labels: { zone: 'lab' }, state: 'alive', self: false, backend: 'wasm', instances: { total: 1, running: 1, failed: 0 } })
  t.same(gw.sensors, [{ id: 'temp-1', type: 'temperature', unit: '°C', geo: { lat: 52.5, lon: 13.4 } }])
  t.ok(gw.health.memTotalBytes > 0 && Array.isArray(gw.health.load))
  t.equal(res.body.nodes.find((n: any) => n.peerId === selfId).self, true)
  t.equal(gw.clock.skewed, false, 'its clock agrees with the coordinator\'s')
  t.ok(gw.clock.offsetSec == null || Math.abs(gw.clock.offsetSec) <= 1, `its clock offset is measured in seconds (${gw.clock.offsetSec})`)

  const filtered = (await client.request('GET', '/api/v1/nodes?role=gateway&sensorType=temperature&label=zone=lab', { token: ops })).body
  t.same(filtered.nodes.map((n: any) => n.peerId), [gatewayId])
  t.equal((await client.request('GET', '/api/v1/nodes?label=zone=elsewhere', { token: ops })).body.count, 0)
  const one = await client.request('GET', `/api/v1/nodes/${gatewayId}`, { token: ops })
  t.equal(one.status, 200)
  t.match(one.body.instances, [{ node: gatewayId, id: 'vibration', model: 'vibration', version: '1.0.0', state: 'running' }])
  t.equal((await client.request('GET', '/api/v1/nodes/12D3KooWNotAMemberHere', { token: ops })).status, 404)
})

t.test('monitoring: gateway status and model status', async t => {
  const gateways = (await client.request('GET', '/api/v1/monitoring/gateways', { token: ops })).body
  t.match(gateways.summary, { total: 1, alive: 1, dead: 0 })
  t.match(gateways.gateways[0], { peerId: gatewayId, role: 'gateway', state: 'alive', sensors: 1, instances: { running: 1 }, clockSkewed: false })
  t.ok(gateways.gateways[0].lastHealthReport > 0, 'when it last wrote its health (not a sign of life: state is)')
  t.ok(gateways.gateways[0].memUsedPct > 0)
  const models = (await client.request('GET', '/api/v1/monitoring/models', { token: ops })).body
  t.match(models.models, [{ model: 'vibration', versions: ['1.0.0'], states: { running: 1 }, instances: [{ node: gatewayId, nodeState: 'alive' }] }])
})

t.test('live events: snapshot, then changes as they happen', async t => {
  const events: Array<{ type: string, data: any, at: number }> = []
  const abort = new AbortController()
  const base = http.base!
  void watchSse(`${base}/api/v1/events`, ops, events, abort.signal)
  await waitFor(() => events.some(e => e.type === 'snapshot'), 'the snapshot')
  t.equal(events[0]!.data.nodes.length, 2)
  await coordinator.gateway.registry.set(`instance/${gatewayId}/vibration`, { state: 'failed', model: 'vibration', version: '1.0.0', reason: 'out of memory' })
  const delta = await waitFor(() => events.find(e => e.type === 'delta' && e.data.models?.[0]?.states.failed === 1), 'a delta with the model status')
  t.equal(delta.data.models[0].instances[0].reason, 'out of memory')
  t.match(delta.data.nodes.find((n: any) => n.peerId === gatewayId), { instances: { failed: 1 } }, 'the same delta carries the gateway with its new instance counts')
  t.same(delta.data.removed, [])
  const deltas = events.filter(e => e.type === 'delta')
  for (let i = 1; i < deltas.length; i++) t.ok(deltas[i]!.at - deltas[i - 1]!.at >= 900, 'at most one delta a second')
  abort.abort()
  const refused = await fetch(`${base}/api/v1/events`)
  t.equal(refused.status, 401, 'no stream without a token')
})

t.test('logs: search the nodes, merged by time, and download NDJSON', async t => {
  const log = coordinator.logger.child({ service: 'probe' })
  log.info({ marker: 'alpha' }, 'first probe line')
  log.warn({ marker: 'beta' }, 'second probe line')
  log.error({ marker: 'gamma' }, 'third probe line')
  await coordinator.logs.flush()
  const res = await client.request('GET', '/api/v1/logs?service=probe&limit=10', { token: ops })
  t.equal(res.status, 200)
  t.same(res.body.entries.map((e: any) => e.msg), ['third probe line', 'second probe line', 'first probe line'], 'newest first')
  t.ok(res.body.entries.every((e: any) => e.node === selfId && typeof e.time === 'number'))
  const self = res.body.nodes.find((n: any) => n.peerId === selfId)
  t.match(self, { returned: 3 })
  t.match(res.body.nodes.find((n: any) => n.peerId === gatewayId), { error: /no mesh/ }, 'a node that cannot answer is reported, not fatal')
  t.same((await client.request('GET', '/api/v1/logs?service=probe&level=warn&order=asc', { token: ops })).body.entries.map((e: any) => e.marker), ['beta', 'gamma'])
  t.same((await client.request('GET', '/api/v1/logs?text=GAMMA', { token: ops })).body.entries.map((e: any) => e.marker), ['gamma'])
  t.equal((await client.request('GET', `/api/v1/logs?service=probe&node=${gatewayId}`, { token: ops })).body.count, 0, 'only the named nodes are asked')
  t.equal((await client.request('GET', '/api/v1/logs?service=probe&since=1h&limit=2', { token: ops })).body.truncated, true)

  const download = await http.request('GET', '/api/v1/logs/download?service=probe&order=asc', { token: ops })
  t.equal(download.status, 200)
  t.match(download.headers['content-type'], /application\/x-ndjson/)
  t.match(download.headers['content-disposition'], /attachment; filename="gatemesh-logs-/)
  t.same(download.text.trim().split('\n').map(l => JSON.parse(l).marker), ['alpha', 'beta', 'gamma'])
})

t.test('enrollment: one-time join token → certificate for the device\'s own key', async t => {
  const created = await client.request('POST', '/api/v1/enrollments', { token: admin, body: { role: 'gateway', labels: { site: 'north' }, ttlSec: 600 } })
  t.equal(created.status, 201)
  const joinToken: string = created.body.token
  t.match(joinToken, /^gmj_/)
  const key = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(key).toString()
  const proof = async (id: string): Promise<string> => Buffer.from(await key.sign(enrollmentProofMessage(id, peerId))).toString('base64url')
  const body = { token: joinToken, peerId, role: 'gateway', labels: { site: 'south', rack: '4' }, proof: await proof(joinTokenId(joinToken)!) }

  const wrongRole = await client.request('POST', '/api/v1/enroll', { body: { ...body, role: 'server' } })
  t.equal(wrongRole.status, 403, 'the token fixes the role')
  const otherKey = await generateKeyPair('Ed25519')
  const forged = await client.request('POST', '/api/v1/enroll', { body: { ...body, proof: Buffer.from(await otherKey.sign(enrollmentProofMessage(joinTokenId(joinToken)!, peerId))).toString('base64url') } })
  t.equal(forged.status, 400, 'a proof by another key is refused')
  t.equal(forged.body.field, 'body.proof')

  const enrolled = await http.request('POST', '/api/v1/enroll', { body })
  t.equal(enrolled.status, 200)
  t.match(enrolled.body, { peerId, role: 'gateway', labels: { site: 'north', rack: '4' }, fleetId: coordinator.fleet.fleetId, bootstrap: [/\/p2p\//] })
  const claims = await verifyNodeCertificate(enrolled.body.certificate, coordinator.fleet.publicKey, peerId)
  t.match(claims, { sub: peerId, role: 'gateway', labels: { site: 'north' } }, 'the certificate is fleet-signed for the device\'s peer id; the token\'s labels win')
  t.equal(Buffer.from(enrolled.body.networkKey, 'base64').length, 95, 'the network key travels in the answer')

  const again = await client.request('POST', '/api/v1/enroll', { body })
  t.equal(again.status, 401, 'the token is consumed')
  t.equal(again.body.code, 'ERR_ENROLLMENT_TOKEN')
  const list = (await client.request('GET', '/api/v1/enrollments', { token: admin })).body.enrollments
  t.match(list[0], { usedBy: peerId, role: 'gateway' })
  t.notOk('hash' in list[0])

  const short = await client.request('POST', '/api/v1/enrollments', { token: admin, body: { role: 'server', ttlSec: 60 } })
  t.equal((await client.request('DELETE', `/api/v1/enrollments/${short.body.enrollment.id}`, { token: admin })).status, 204)
  const revoked = await client.request('POST', '/api/v1/enroll', { body: { ...body, token: short.body.token, role: 'server', proof: await proof(joinTokenId(short.body.token)!) } })
  t.equal(revoked.status, 401, 'a revoked token is refused')
  t.equal((await client.request('POST', '/api/v1/enroll', { body: { ...body, token: 'gmj_nonsense' } })).status, 401)
})

/** SSE reader that keeps the event names (bench/sse.ts keeps only data). */
async function watchSse (url: string, bearer: string, into: Array<{ type: string, data: any, at: number }>, signal: AbortSignal): Promise<void> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${bearer}` }, signal })
  const decoder = new TextDecoder()
  let buffer = ''
  try {
    for await (const chunk of res.body!) {
      buffer += decoder.decode(chunk, { stream: true })
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const type = /^event: (.*)$/m.exec(block)?.[1]
        const data = block.split('\n').filter(l => l.startsWith('data: ')).map(l => l.slice(6)).join('\n')
        if (type != null && data !== '') into.push({ type, data: JSON.parse(data), at: Date.now() })
      }
    }
  } catch (err) {
    if (!signal.aborted) throw err
  }
}
