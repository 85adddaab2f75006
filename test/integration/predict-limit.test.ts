import { join } from 'node:path'
import t from 'tap'
import { loadConfig, writeConfig } from '../../node/config/config.ts'
import { loadFleet } from '../../node/identity/fleet.ts'
import { initNodeDir } from '../../node/identity/node-dir.ts'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { DEFAULT_MAX_PREDICT_BYTES } from '../../protocols/predict/index.ts'
import { CLI, Cluster, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { saveLayersModel } from '../helpers/models.ts'
import { run } from '../helpers/processes.ts'
import { budget, startBudget } from '../helpers/budget.ts'
const MIB = 1024 * 1024
const WIDTH = 1024

// a server with no model, two gateways that run a model taking 1024 numbers per instance (one of them
// with a smaller body limit), and a coordinator: separate processes over real libp2p on 127.0.0.1
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
// a forwarded 10 MiB predict takes a second on a quiet machine, and far longer on a loaded one: the
// forwarding deadline is raised on every node (the coordinator's embedded agent included)
const PREDICT_TIMEOUT_MS = 240_000
async function configure (dir: string, api: Record<string, unknown>): Promise<void> {
  const config = await loadConfig(dir)
  await writeConfig(dir, { ...config, api: { ...config.api, predictTimeoutMs: PREDICT_TIMEOUT_MS, ...api } })
}
for (const name of ['srv', 'gw', 'small']) await cluster.addNode(name, name === 'srv' ? { role: 'server' } : {})
await configure(cluster.node('srv').dir, {})
await configure(cluster.node('gw').dir, {})
await configure(cluster.node('small').dir, { maxPredictBytes: 4 * MIB })
// the coordinator's node directory, made as its first start would make it, with the longer deadline
await initNodeDir(join(coordinator.init.dataDir, 'node'), {
  fleetDir: cluster.fleetDir,
  role: 'coordinator',
  listen: ['/ip4/127.0.0.1/tcp/0'],
  bootstrap: [],
  apiPort: 0,
  config: { logs: { stdout: true }, api: { host: '127.0.0.1', port: 0, predictTimeoutMs: PREDICT_TIMEOUT_MS } }
})
// started together (three at once load slowly on a busy 2-core machine), each waited for twice a lone start's budget
for (const n of ['srv', 'gw', 'small']) await cluster.start(n, { wait: false })
for (const n of ['srv', 'gw', 'small']) await cluster.waitReady(n, 2 * startBudget())
coordinator.init.bootstrap = [cluster.node('srv').multiaddr]
await coordinator.start()
// printed just after coordinator.json is written: on a busy machine it can lag behind it
const token = await coordinator.login('admin', await waitFor(() => coordinator.printedPassword(), 'the first admin\'s password', 60_000))

const fleet = await loadFleet(cluster.fleetDir)
await saveLayersModel(join(cluster.root, 'wide'), { inputs: WIDTH, hidden: 8 })
const built = await buildBundle({ modelDir: join(cluster.root, 'wide'), name: 'wide', version: '1.0.0', config: {}, signer: { key: fleet.privateKey }, out: join(cluster.root, 'wide.zip') })
await run(process.execPath, [CLI, 'run', built.out, '--api', cluster.node('gw').api, '--data', cluster.node('gw').dir], { timeoutMs: budget(120_000) })
await run(process.execPath, [CLI, 'run', built.out, '--api', cluster.node('small').api, '--data', cluster.node('small').dir, '--name', 'narrow'], { timeoutMs: budget(120_000) })

/** A predict body of about `bytes` bytes of JSON: rows of WIDTH random numbers. */
function body (bytes: number): { text: string, rows: number } {
  const row = (): number[] => Array.from({ length: WIDTH }, () => Math.random())
  const rowBytes = JSON.stringify(row()).length + 1
  const rows = Math.ceil(bytes / rowBytes) + 1
  const text = JSON.stringify({ instances: Array.from({ length: rows }, row) })
  return { text, rows }
}

const post = async (url: string, text: string, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> => {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: text, signal: AbortSignal.timeout(PREDICT_TIMEOUT_MS + 60_000) })
  return { status: res.status, body: await res.json().catch(() => undefined) }
}
const viaCoordinator = (model: string, text: string): ReturnType<typeof post> => post(`${coordinator.url}/api/v1/models/${model}:predict`, text, { authorization: `Bearer ${token}` })
const viaServer = (model: string, text: string): ReturnType<typeof post> => post(`${cluster.node('srv').api}/v1/models/${model}:predict`, text)

/** Forwarded predicts by outcome, from a Prometheus page. */
function forwarded (metrics: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const m of metrics.matchAll(/^gatemesh_predict_forwarded_total\{[^}]*outcome="(\w+)"[^}]*\} (\d+)$/gm)) out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2])
  return out
}
const coordinatorForwarded = async (): Promise<Record<string, number>> => forwarded((await coordinator.request('GET', '/metrics', { token })).text)
const serverForwarded = async (): Promise<Record<string, number>> => forwarded(await (await fetch(`${cluster.node('srv').api}/metrics`)).text())

const small = body(64 * 1024)
await waitFor(async () => (await viaCoordinator('wide', small.text)).status === 200 && (await viaServer('narrow', small.text)).status === 200, 'both models to answer through the mesh', 120_000, 500)

await t.test('a 10 MiB predict through the coordinator reaches the model on a gateway and answers', async t => {
  const ten = body(10 * MIB)
  t.ok(ten.text.length > 10 * MIB && ten.text.length < DEFAULT_MAX_PREDICT_BYTES, `${(ten.text.length / MIB).toFixed(2)} MiB of JSON, ${ten.rows} instances`)
  const before = await coordinatorForwarded()
  let started = performance.now()
  const res = await viaCoordinator('wide', ten.text)
  const coordinatorMs = performance.now() - started
  t.equal(res.status, 200, res.status === 200 ? `answered in ${coordinatorMs.toFixed(0)} ms` : JSON.stringify(res.body))
  t.equal(res.body?.predictions?.length, ten.rows, 'one prediction per instance')
  t.ok(res.body.predictions.every((p: number[]) => p.length === 3 && Math.abs(p[0]! + p[1]! + p[2]! - 1) < 1e-4), 'softmax rows')
  const after = await coordinatorForwarded()
  t.equal((after.ok ?? 0) - (before.ok ?? 0), 1, 'forwarded once over the mesh, and it went through')
  t.equal((after.retry ?? 0) - (before.retry ?? 0), 0, 'no replica failed on the way')

  started = performance.now()
  const agent = await viaServer('wide', ten.text)
  t.equal(agent.status, 200, `the same body through an agent without the model, forwarded agent to agent (${(performance.now() - started).toFixed(0)} ms)${agent.status === 200 ? '' : `: ${JSON.stringify(agent.body)?.slice(0, 300)}`}`)
  t.equal(agent.body?.predictions?.length, ten.rows)
})

await t.test('past the limit is a 413 where the request enters; no replica is tried or blamed', async t => {
  const big = body(17 * MIB)
  t.ok(big.text.length > DEFAULT_MAX_PREDICT_BYTES, `${(big.text.length / MIB).toFixed(2)} MiB`)
  const beforeCoordinator = await coordinatorForwarded()
  const beforeServer = await serverForwarded()

  const res = await viaCoordinator('wide', big.text)
  t.equal(res.status, 413, 'the coordinator answers 413')
  t.match(res.body, { code: 'ERR_BODY_TOO_LARGE', field: 'body', message: new RegExp(`the limit is ${DEFAULT_MAX_PREDICT_BYTES}`) }, 'naming the field and the limit')
  const agent = await viaServer('wide', big.text)
  t.equal(agent.status, 413, 'so does an agent')
  t.equal(agent.body?.code, 'ERR_BODY_TOO_LARGE')

  t.same(await coordinatorForwarded(), beforeCoordinator, 'the coordinator forwarded nothing')
  t.same(await serverForwarded(), beforeServer, 'nor did the agent')
  const ok = await viaCoordinator('wide', small.text)
  t.equal(ok.status, 200, 'and the replica answers the next request at once: it was never marked failed')
})

await t.test('a replica with a smaller limit answers 413 itself, which is relayed and not retried', async t => {
  const six = body(6 * MIB)
  const before = await serverForwarded()
  const res = await viaServer('narrow', six.text)
  t.equal(res.status, 413, 'the replica\'s own limit (4 MiB) applies')
  t.match(res.body, { code: 'ERR_BODY_TOO_LARGE', message: /this node's limit is 4194304/ })
  const after = await serverForwarded()
  t.equal((after.retry ?? 0) - (before.retry ?? 0), 0, 'a refusal is an answer, not a failure: no retry')
  t.equal((await viaServer('narrow', small.text)).status, 200, 'the replica still answers smaller requests')
})
