import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import t from 'tap'
import { buildApi } from '../../node/api/server.ts'
import { newApiToken } from '../../node/identity/api-token.ts'
import { AgentMetrics } from '../../node/metrics/metrics.ts'
import { RuntimeMetrics } from '../../node/metrics/runtime-metrics.ts'
import { UnpackedBundles } from '../../node/runtime/bundle-store.ts'
import { ZipShelf } from '../helpers/zips.ts'
import { Devices } from '../../node/runtime/devices.ts'
import { Runtime } from '../../node/runtime/runtime.ts'
import { Outbox } from '../../node/outbox/outbox.ts'
import { anomalyBundleZip, SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import type { Database } from '../../node/store/db.ts'

// the TF Serving routes through app.inject(), on a real runtime with real workers
const root = await mkdtemp(join(tmpdir(), 'gatemesh-api-'))
const fleet = generateKeyPairSync('ed25519')
const db = new Level<string, unknown>(join(root, 'db'), { valueEncoding: 'json' }) as Database
await db.open()
const logger = pino({ level: 'silent' })
const devices = new Devices({ logger }, [], [])
const shelf = new ZipShelf()
const bundles = new UnpackedBundles({ dataDir: root, fleetKey: fleet.publicKey, zips: shelf })
const outbox = new Outbox({ db, logger, deliver: async () => {} })
const metrics = new AgentMetrics()
const runtime = new Runtime({ node: 'self', sensors: devices.sensors, outbox, logger, metrics: new RuntimeMetrics(metrics.registry), fleetKey: fleet.publicKey, bundles, db, registry: { set: async () => ({}) as any } }, { dataDir: root })
await outbox.start()
await runtime.start()
const TOKEN = newApiToken()
const app = await buildApi({
  peerId: 'self',
  role: 'gateway',
  labels: {},
  version: 'test',
  startedAt: Date.now(),
  addresses: () => [],
  members: () => [],
  registry: { list: () => [], get: () => undefined, set: async () => ({}) as any, delete: async () => ({}) as any, onChange: () => () => {}, size: 0, stampFor: () => { throw new Error('no registry') }, revocations: () => [] },
  metrics,
  deniedPeers: () => [],
  local: { runtime, devices, outbox }
}, { token: TOKEN })
/** starting and stopping instances needs the node's token; predict and status do not */
const authorization = { authorization: `Bearer ${TOKEN}` }
t.teardown(async () => {
  await app.close()
  await runtime.stop()
  await outbox.stop()
  await db.close()
  await rm(root, { recursive: true, force: true })
})
const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))

t.test('run, status, predict, stop', async t => {
  t.equal((await app.inject({ method: 'GET', url: '/v1/models/anomaly' })).statusCode, 404)
  const zip = await anomalyBundleZip(fleet.privateKey, { under: root })
  await shelf.add(zip.out)
  const missing = await app.inject({ method: 'POST', url: '/v1/instances', headers: authorization, payload: { bundle: 'a'.repeat(64) } })
  t.equal(missing.statusCode, 404, 'a bundle this node does not hold')
  t.match(missing.json(), { code: 'ERR_BUNDLE_NOT_FOUND' })
  const run = await app.inject({ method: 'POST', url: '/v1/instances', headers: authorization, payload: { bundle: zip.digest } })
  t.equal(run.statusCode, 201, run.body)
  t.match(run.json(), { name: 'anomaly', state: 'running', backend: 'wasm' })
  const again = await app.inject({ method: 'POST', url: '/v1/instances', headers: authorization, payload: { bundle: zip.digest } })
  t.equal(again.statusCode, 409)
  t.equal((await app.inject({ method: 'POST', url: '/v1/instances', headers: authorization, payload: { bundle: 'abc' } })).json().field, 'body.bundle')

  const status = await app.inject({ method: 'GET', url: '/v1/models/anomaly' })
  t.equal(status.statusCode, 200)
  t.same(status.json().model_version_status[0].state, 'AVAILABLE')
  t.equal((await app.inject({ method: 'GET', url: '/v1/models/anomaly/versions/1.0.0' })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/v1/models/anomaly/versions/2' })).statusCode, 404)
  t.match((await app.inject({ method: 'GET', url: '/v1/models/anomaly/metadata' })).json(), { model_spec: { name: 'anomaly' }, metadata: { signature_def: { inputs: [{ name: 'window' }] } } })

  const predict = await app.inject({ method: 'POST', url: '/v1/models/anomaly:predict', payload: { instances: [scaled(temperatures(20)), scaled(temperatures(20, 15))] } })
  t.equal(predict.statusCode, 200, predict.body)
  const p = predict.json().predictions
  t.ok(p[0][0] > 0.9 && p[1][1] > 0.9, 'normal, then anomaly')
  const curl = await app.inject({ method: 'POST', url: '/v1/models/anomaly:predict', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: JSON.stringify({ inputs: [scaled(temperatures(20))] }) })
  t.equal(curl.statusCode, 200, 'JSON without a JSON content type (curl -d) is accepted')
  t.equal(curl.json().outputs.length, 1)
  const versioned = await app.inject({ method: 'POST', url: '/v1/models/anomaly/versions/1.0.0:predict', payload: { instances: [scaled(temperatures(20))] } })
  t.equal(versioned.statusCode, 200, versioned.body)

  const cases: Array<[string, unknown, string]> = [
    ['{"instances": [', '', 'body'],
    [JSON.stringify({ instances: [scaled(temperatures(20)).slice(1)] }), '', 'instances[0]'],
    [JSON.stringify({ instances: [[...scaled(temperatures(20)).slice(1), 'hot']] }), '', 'instances[0][15]'],
    [JSON.stringify({ rows: [] }), '', 'body.rows'],
    [JSON.stringify([1, 2]), '', 'body']
  ]
  for (const [payload, , field] of cases) {
    const r = await app.inject({ method: 'POST', url: '/v1/models/anomaly:predict', headers: { 'content-type': 'application/json' }, payload })
    t.equal(r.statusCode, 400, `${payload.slice(0, 40)} → 400`)
    if (field !== 'body' || r.json().field != null) t.equal(r.json().field ?? 'body', field, `names ${field}`)
  }
  t.equal((await app.inject({ method: 'POST', url: '/v1/models/nope:predict', payload: { instances: [[1]] } })).statusCode, 404)

  t.match((await app.inject({ method: 'GET', url: '/v1/instances' })).json(), { instances: [{ name: 'anomaly' }], backend: 'wasm' })
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/instances/anomaly', headers: authorization })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/v1/models/anomaly' })).statusCode, 404)
  t.equal((await app.inject({ method: 'DELETE', url: '/v1/instances/anomaly', headers: authorization })).statusCode, 404)
  const metricsText = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metricsText, /gatemesh_predictions_total\{model="anomaly",source="api"\} \d+/)
  t.match(metricsText, /gatemesh_inference_backend\{runtime="tfjs",backend="wasm"\} 1/)
})
