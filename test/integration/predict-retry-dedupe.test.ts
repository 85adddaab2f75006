import t from 'tap'
import { loadConfig, writeConfig } from '../../node/config/config.ts'
import { loadFleet } from '../../node/identity/fleet.ts'
import { anomalyBundleZip, SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { budget, startBudget } from '../helpers/budget.ts'
import { CLI, Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { run } from '../helpers/processes.ts'
import { HttpSink } from '../helpers/receivers.ts'

// A predict the router retries on another replica after a timeout: the first replica ran it all the same,
// and both fire the rule. The receiver must see one idempotency key per notification, whichever node sent it.
// Separate agent processes over real libp2p on 127.0.0.1: a server without the model that forwards with a
// short deadline (its router gives up on a replica after 600 ms), and two gateways running the model, each
// holding every request 1 s for company (runtime.maxBatchDelayMs): slower than the deadline whatever the
// machine's load, so every forwarded request runs on both replicas.
const sink = await HttpSink.start()
const cluster = await Cluster.create()
t.teardown(async () => {
  await cluster.close()
  await sink.stop()
})
const outbox = { baseDelayMs: 200, maxDelayMs: 1000, maxAttempts: 1000 }
await cluster.addNode('srv', { role: 'server', config: { outbox } })
for (const gw of ['gw1', 'gw2']) await cluster.addNode(gw, { config: { outbox, runtime: { maxBatchDelayMs: 1000 } } })
const srvDir = cluster.node('srv').dir
const config = await loadConfig(srvDir)
await writeConfig(srvDir, { ...config, api: { ...config.api, predictTimeoutMs: 600 } })
for (const n of ['srv', 'gw1', 'gw2']) await cluster.start(n, { wait: false })
for (const n of ['srv', 'gw1', 'gw2']) await cluster.waitReady(n, 2 * startBudget())

const fleet = await loadFleet(cluster.fleetDir)
const zip = (await anomalyBundleZip(fleet.privateKey, {
  under: cluster.root,
  validate: true,
  config: { rules: [{ name: 'alert', when: 'class == "anomaly"', actions: [{ type: 'http.post', url: `${sink.url}/notify` }] }] }
})).out
for (const gw of ['gw1', 'gw2']) {
  await run(process.execPath, [CLI, 'run', zip, '--api', cluster.node(gw).api, '--data', cluster.node(gw).dir, '--name', 'notify'], { timeoutMs: budget(120_000) })
}
await waitFor(async () => (await cluster.request('srv', 'GET', '/v1/models/notify')).body?.replicas?.length === 2, 'the server to see both replicas', budget(60_000), 500)

const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
/** An anomalous window with a spike of its own: the answered row, and so the notification, differs per request. */
const anomaly = (n: number): { instances: number[][] } => ({ instances: [scaled(temperatures(21, 12 + n * 0.37))] })
const predict = async (node: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any, requestId: string | null }> => {
  const res = await fetch(`${cluster.node(node).api}/v1/models/notify:predict`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal: AbortSignal.timeout(budget(60_000)) })
  return { status: res.status, body: await res.json().catch(() => undefined), requestId: res.headers.get('x-request-id') }
}
const hooks = (): Array<{ key: string, event: Record<string, any> }> => sink.hooks.all.map(h => ({ key: h.key, event: JSON.parse(String(h.body)) }))

const nodesOf = (id: string): Set<string> => new Set(hooks().filter(h => h.event.requestId === id).map(h => String(h.event.node)))

await t.test('a predict retried on a second replica: both ran it, the receiver gets one key', async t => {
  // On a loaded machine the server can give up on a replica before it even read the request; then only one
  // replica runs it. Requests are sent until one ran on both (the case under test), every one checked.
  const sent: string[] = []
  for (let n = 0; n < 6 && !sent.some(id => nodesOf(id).size === 2); n++) {
    // every other request without a client id: the entry point assigns one, and the retry carries that
    const given = n % 2 === 0 ? `client-request-${n}` : undefined
    const res = await predict('srv', anomaly(n), given == null ? {} : { 'idempotency-key': given })
    if (given != null) t.equal(res.requestId, given, `request ${n}: the answer names the client's id (status ${res.status})`)
    else t.match(res.requestId, /^[0-9a-f-]{36}$/, `request ${n}: a UUID assigned where it entered (status ${res.status})`)
    const id = res.requestId!
    sent.push(id)
    await waitFor(() => nodesOf(id).size === 2, `request ${n} to run on both gateways`, budget(10_000), 200).catch(() => {})
  }
  const both = sent.filter(id => nodesOf(id).size === 2)
  t.ok(both.length > 0, `${both.length} of ${sent.length} requests ran on both replicas: the retry path was taken`)
  for (const id of sent) {
    const copies = hooks().filter(h => h.event.requestId === id)
    if (copies.length === 0) continue
    t.equal(new Set(copies.map(h => JSON.stringify(h.event.output))).size, 1, `${id}: one event`)
    t.equal(new Set(copies.map(h => h.key)).size, 1, `${id}: ${copies.length} deliveries from ${nodesOf(id).size} node(s) under one idempotency key, which the receiver drops repeats by`)
  }
  const fired = new Set(hooks().map(h => h.event.requestId)).size
  t.equal(sink.hooks.unique.length, fired, 'after dropping repeats by key: one notification per request')
})

await t.test('the same request sent twice to one gateway: its outbox takes it once', async t => {
  const body = anomaly(11)
  const a = await predict('gw1', body, { 'x-request-id': 'twice-to-gw1' })
  const b = await predict('gw1', body, { 'x-request-id': 'twice-to-gw1' })
  t.equal(a.status, 200)
  t.equal(b.status, 200, 'both answered (a predict is a read; only its actions are deduped)')
  await waitFor(() => hooks().some(h => h.event.requestId === 'twice-to-gw1'), 'the notification', budget(30_000), 200)
  // the second copy, had it been queued, would be sent right away: give it the time it would have taken
  await sleep(3000)
  t.equal(hooks().filter(h => h.event.requestId === 'twice-to-gw1').length, 1, 'one delivery: the repeat was dropped by the outbox, not sent for the receiver to drop')
})

await t.test('a request id that is not one is a 400 naming the header; nothing runs', async t => {
  const before = sink.hooks.all.length
  for (const [header, value] of [['idempotency-key', 'has a space'], ['x-request-id', 'x'.repeat(129)]] as const) {
    const res = await predict('srv', anomaly(20), { [header]: value })
    t.equal(res.status, 400, `${header}: 400`)
    t.match(res.body, { code: 'ERR_INVALID_MESSAGE', field: `headers.${header}` })
  }
  await sleep(1500)
  t.equal(sink.hooks.all.length, before, 'no notification')
})
