import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Agent } from '../../node/agent.ts'
import { freePort } from '../helpers/ports.ts'
import { readApiToken } from '../../node/identity/api-token.ts'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { initNodeDir } from '../../node/identity/node-dir.ts'
import { deploymentKey } from '../../node/scheduler/keys.ts'
import { authorizeRegistryWrite } from '../../packaging/trust.ts'
import { anomalyBundleZip } from '../helpers/anomaly-bundle.ts'
import { fetchSender, fuzzRoute, type RouteCase } from './http.ts'
import { banner, CrashWatch, HEAP_GROWTH_LIMIT, RUNS, settledHeap } from './lib.ts'

/**
 * Every route of the agent's HTTP API, fuzzed over real HTTP on 127.0.0.1
 * against a real agent running in this process (real registry, runtime
 * with a real model, bundle store, scheduler): bodies, query strings, path
 * parameters and headers mutated from a valid request. No 500, every
 * refusal a JSON error with a code and a message (schema refusals name the
 * field), no uncaught error, the agent still answers afterwards, the heap
 * stays bounded.
 */
t.comment(banner('agent-api'))
const watch = new CrashWatch()
const root = await mkdtemp(join(tmpdir(), 'gatemesh-fuzz-agent-'))
const fleetDir = join(root, 'fleet')
await initFleet(fleetDir)
const fleet = await loadFleet(fleetDir)
const dir = join(root, 'node')
const apiPort = await freePort()
await initNodeDir(dir, { fleetDir, role: 'gateway', labels: { zone: 'fuzz' }, listen: ['/ip4/127.0.0.1/tcp/0'], apiPort, config: { logs: { stdout: false, level: 'warn' }, mdns: false } })
const agent = await Agent.create(dir)
t.teardown(async () => {
  await agent.stop()
  await rm(root, { recursive: true, force: true })
})
await agent.start()
const base = `http://127.0.0.1:${apiPort}`
const token = await readApiToken(dir)
const auth = { authorization: `Bearer ${token}` }
const send = fetchSender(base)
const alive = async (): Promise<boolean> => (await fetch(`${base}/healthz`).catch(() => undefined))?.status === 200

// a real model to predict with: publish the bundle, run it
const built = await anomalyBundleZip(fleet.privateKey, { under: root })
const published = await fetch(`${base}/v1/bundles`, { method: 'POST', headers: { ...auth, 'content-type': 'application/zip' }, body: built.bytes })
if (published.status >= 300) throw new Error(`publishing the bundle: ${published.status} ${await published.text()}`)
const run = await fetch(`${base}/v1/instances`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ bundle: built.digest }) })
if (run.status !== 201) throw new Error(`running the model: ${run.status} ${await run.text()}`)
const heapAtStart = await settledHeap()

const self = agent.peerId
const spec = { id: 'fuzzdep', model: { name: 'anomaly', version: '1.0.0' }, replicas: 1, placement: { policy: 'spread' }, instance: { name: 'fuzzdep' } }
// signed for this writer and moment: replays of the same body later are refused (403), which is fine here
const deployAuth = await authorizeRegistryWrite({ key: deploymentKey('fuzzdep'), valueJson: JSON.stringify(spec), writer: self, ts: [Date.now(), 0] }, { key: fleet.privateKey })
const undeployAuth = await authorizeRegistryWrite({ key: deploymentKey('gone'), valueJson: null, writer: self, ts: [Date.now(), 0] }, { key: fleet.privateKey })
const window = Array.from({ length: 16 }, (_, i) => 0.4 + i / 100)

const ROUTES: RouteCase[] = [
  { method: 'GET', url: '/healthz' },
  { method: 'GET', url: '/metrics' },
  { method: 'GET', url: '/v1/status' },
  { method: 'GET', url: '/v1/registry', query: { prefix: 'node/', tombstones: 'false' } },
  { method: 'GET', url: `/v1/registry/node/${self}`, params: [`node/${self}`] },
  { method: 'PUT', url: `/v1/registry/instance/${self}/fuzz`, params: [`instance/${self}/fuzz`], bodies: [{ value: { a: [1, 'b', null] } }, { value: 'text' }] },
  { method: 'DELETE', url: `/v1/registry/instance/${self}/fuzz`, params: [`instance/${self}/fuzz`], bodies: [{}, { auth: 'x'.repeat(20) }] },
  { method: 'GET', url: '/v1/write-stamp', query: { key: 'deployment/fuzzdep' } },
  { method: 'GET', url: '/v1/revocations' },
  { method: 'GET', url: '/v1/watch', query: { prefix: 'node/' }, stream: true },
  { method: 'GET', url: '/v1/models/anomaly', params: ['anomaly'] },
  { method: 'GET', url: '/v1/models/anomaly/versions/1.0.0', params: ['anomaly', '1.0.0'] },
  { method: 'GET', url: '/v1/models/anomaly/metadata', params: ['anomaly'] },
  { method: 'POST', url: '/v1/models/anomaly:predict', params: ['anomaly:predict'], bodies: [{ instances: [window] }, { inputs: { window: [window] } }, { signature_name: 'serving_default', instances: [{ window }] }] },
  { method: 'POST', url: '/v1/models/anomaly/versions/1.0.0:predict', params: ['anomaly', '1.0.0:predict'], bodies: [{ instances: [window, window] }] },
  { method: 'GET', url: '/v1/instances' },
  { method: 'POST', url: '/v1/instances', bodies: [{ bundle: built.digest, name: 'other' }, { bundle: 'f'.repeat(64), sensors: ['temp-1'], spec: { input: {} } }] },
  { method: 'DELETE', url: '/v1/instances/ghost', params: ['ghost'] },
  { method: 'GET', url: '/v1/sensors' },
  { method: 'GET', url: '/v1/outbox' },
  { method: 'POST', url: '/v1/outbox/dead/job-1/retry', params: ['job-1'] },
  { method: 'GET', url: '/v1/bundles' },
  { method: 'GET', url: `/v1/bundles/${built.digest}`, params: [built.digest] },
  { method: 'POST', url: `/v1/bundles/${'e'.repeat(64)}/pull`, params: ['e'.repeat(64)], query: { wait: 'false' } },
  { method: 'POST', url: '/v1/bundles', headers: { 'content-type': 'application/zip' }, bodies: [{ zip: 'not really' }] },
  { method: 'GET', url: '/v1/deployments' },
  { method: 'GET', url: '/v1/deployments/fuzzdep', params: ['fuzzdep'] },
  { method: 'PUT', url: '/v1/deployments/fuzzdep', params: ['fuzzdep'], bodies: [{ spec, auth: deployAuth }] },
  { method: 'DELETE', url: '/v1/deployments/gone', params: ['gone'], bodies: [{ auth: undeployAuth }] },
  { method: 'GET', url: '/v1/scheduler' },
  { method: 'GET', url: '/v1/control' },
  { method: 'POST', url: '/v1/drain' },
  { method: 'POST', url: '/v1/undrain' },
  { method: 'POST', url: '/v1/deployments/fuzzdep/evict', params: ['fuzzdep'] },
  { method: 'DELETE', url: '/v1/deployments/fuzzdep/evict', params: ['fuzzdep'] }
]

for (const route of ROUTES) {
  t.test(`${route.method} ${route.url}`, async t => {
    const problems = await fuzzRoute(route, { auth, alive, send })
    t.same(problems, [], `${RUNS} hostile requests: no 500, every refusal a coded JSON error naming the field, the agent still answers`)
  })
}

t.test('the agent survived and memory stayed bounded', async t => {
  watch.stop()
  t.same(watch.crashes, [], 'no uncaught exception or unhandled rejection')
  t.ok(await alive(), 'the agent answers')
  const growth = await settledHeap() - heapAtStart
  t.comment(`heap growth: ${(growth / 1024 / 1024).toFixed(1)} MiB`)
  t.ok(growth < HEAP_GROWTH_LIMIT, `heap grew ${(growth / 1024 / 1024).toFixed(1)} MiB (limit ${HEAP_GROWTH_LIMIT / 1024 / 1024} MiB)`)
})
