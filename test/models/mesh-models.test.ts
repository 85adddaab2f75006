import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { freePort } from '../helpers/ports.ts'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { agentGrpc, floatTensor, rowsOf, servingClient, signatureOf } from '../helpers/grpc.ts'
import { fixture, maxDiff, REFERENCE } from '../helpers/model-fixtures.ts'
import { runningOn } from '../helpers/scheduling.ts'

/**
 * An ONNX and a TFLite model through the whole system, as separate
 * processes on 127.0.0.1: uploaded to the coordinator's API, deployed on
 * gateways by the mesh's scheduler, predicted by REST and by gRPC through a
 * server that does not run them (forwarded over the mesh) and through the
 * coordinator (with its bearer tokens).
 */
const TOLERANCE = 1e-5

const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
const grpcPorts: Record<string, number> = {}
for (const [name, role] of [['srv', 'server'], ['gw1', 'gateway'], ['gw2', 'gateway']] as const) {
  grpcPorts[name] = await freePort()
  await cluster.addNode(name, { role, config: { grpc: { port: grpcPorts[name] } } })
}
// one at a time: three agents loading from sources at once can take past the start budget on a busy 2-core machine
for (const n of ['srv', 'gw1', 'gw2']) await cluster.start(n)
await agentGrpc(cluster.node('srv').dir)
coordinator.init.bootstrap = [cluster.node('srv').multiaddr]
const started = await coordinator.start()
const token = await coordinator.login('admin', coordinator.printedPassword()!)

async function upload (name: string, file: string, bytes: Uint8Array): Promise<{ status: number, body: any }> {
  const form = new FormData()
  form.set('name', name)
  form.set('version', '1')
  form.append('model', new Blob([bytes]), file)
  const res = await fetch(`${coordinator.url}/api/v1/models`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(180_000) })
  return { status: res.status, body: await res.json() }
}

async function post (url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal: AbortSignal.timeout(30_000) })
  return { status: res.status, body: await res.json().catch(() => undefined) }
}

await t.test('upload ONNX and TFLite through the API; corrupt files are refused and nothing is stored', async t => {
  t.ok(started.grpc != null, `the coordinator serves gRPC at ${started.grpc}`)
  const onnx = await upload('mlp-onnx', 'mlp.onnx', await readFile(fixture('mlp.onnx')))
  t.equal(onnx.status, 201, JSON.stringify(onnx.body).slice(0, 300))
  t.match(onnx.body, { format: 'onnx', inputs: [{ name: 'readings', shape: [-1, 16] }], outputs: [{ name: 'scores' }] })
  const tflite = await upload('conv-tflite', 'conv.tflite', await readFile(fixture('conv-dyn.tflite')))
  t.equal(tflite.status, 201, JSON.stringify(tflite.body).slice(0, 300))
  t.match(tflite.body, { format: 'tflite', inputs: [{ name: 'image', shape: [-1, 28, 28, 1] }], outputs: [{ name: 'output_0' }] })

  const conv = await readFile(fixture('conv.onnx'))
  const badOnnx = await upload('broken', 'conv.onnx', conv.subarray(0, conv.length - 4000))
  t.equal(badOnnx.status, 422, 'a truncated .onnx is refused')
  t.match(badOnnx.body, { code: 'ERR_MODEL_LOAD', message: /conv\.onnx: ONNX Runtime cannot load this model/ })
  const flat = Buffer.from(await readFile(fixture('mlp-b1.tflite')))
  flat.fill(0x41, 64, 2048)
  const badTflite = await upload('broken', 'mlp.tflite', flat)
  t.equal(badTflite.status, 422, 'a corrupted .tflite is refused')
  t.match(badTflite.body, { code: /ERR_MODEL_LOAD|ERR_MODEL_CHECK_LIMIT/, message: /mlp\.tflite/ })
  const list = await coordinator.request('GET', '/api/v1/models', { token })
  t.same(list.body.models.map((m: any) => m.name).sort(), ['conv-tflite', 'mlp-onnx'], 'only the two good models are stored')
})

await t.test('deploy both on the gateways', async t => {
  for (const [id, name] of [['mlp', 'mlp-onnx'], ['conv', 'conv-tflite']]) {
    const res = await coordinator.request('POST', '/api/v1/deployments', { token, body: { id, model: { name, version: '1' }, placement: { role: 'gateway' } } })
    t.equal(res.status, 201, JSON.stringify(res.body))
  }
  for (const id of ['mlp', 'conv']) {
    const on = await waitFor(async () => { const r = await runningOn(cluster, 'srv', id); return r.length > 0 ? r : undefined }, `${id} to run on a gateway`, 180_000, 500)
    t.ok(on.every(n => n.startsWith('gw')), `${id} runs on ${on.join()}`)
  }
  const status = await (await fetch(`${cluster.node('srv').api}/v1/models/mlp-onnx`)).json()
  t.match(status, { model_version_status: [{ version: '1', state: 'AVAILABLE' }] }, 'the server reports the remote model AVAILABLE')
})

await t.test('REST through a server that does not run them, and through the coordinator', async t => {
  const srv = cluster.node('srv').api
  for (const [model, net] of [['mlp-onnx', 'mlp'], ['conv-tflite', 'conv']] as const) {
    const ref = REFERENCE[net]
    const forwarded = await post(`${srv}/v1/models/${model}:predict`, { instances: ref.input })
    t.equal(forwarded.status, 200, `${model} via srv: ${JSON.stringify(forwarded.body).slice(0, 200)}`)
    t.ok(maxDiff(forwarded.body.predictions, ref.output) <= TOLERANCE, `${model} via srv (forwarded over the mesh) matches the reference`)
    const viaCoordinator = await post(`${coordinator.url}/api/v1/models/${model}:predict`, { instances: ref.input }, { authorization: `Bearer ${token}` })
    t.equal(viaCoordinator.status, 200)
    t.ok(maxDiff(viaCoordinator.body.predictions, ref.output) <= TOLERANCE, `${model} via the coordinator matches the reference`)
  }
  const bad = await post(`${srv}/v1/models/conv-tflite:predict`, { instances: [[[1, 2]]] })
  t.equal(bad.status, 400, 'a bad input is a 400, relayed from the replica')
  t.match(bad.body, { code: 'ERR_INVALID_INPUT', field: 'instances[0]', message: /instances\[0\]: expected 28 values, got 1/ })
  const badNamed = await post(`${coordinator.url}/api/v1/models/mlp-onnx:predict`, { inputs: { temperature: REFERENCE.mlp.input } }, { authorization: `Bearer ${token}` })
  t.equal(badNamed.status, 400)
  t.match(badNamed.body.message, /inputs\.temperature: is not an input of this model \(its inputs: readings\)/)
})

await t.test('gRPC through the server (forwarded) and through the coordinator (bearer token)', async t => {
  const viaSrv = await servingClient(`127.0.0.1:${grpcPorts.srv}`)
  const viaCoordinator = await servingClient(started.grpc!, { token })
  const anonymous = await servingClient(started.grpc!)
  t.teardown(() => { viaSrv.close(); viaCoordinator.close(); anonymous.close() })
  for (const [client, where] of [[viaSrv, 'srv'], [viaCoordinator, 'the coordinator']] as const) {
    const mlp = await client.predict({ model_spec: { name: 'mlp-onnx' }, inputs: { readings: floatTensor(REFERENCE.mlp.input) } })
    t.ok(maxDiff(rowsOf(mlp.outputs.scores), REFERENCE.mlp.output) <= TOLERANCE, `ONNX via ${where} matches the reference`)
    const conv = await client.predict({ model_spec: { name: 'conv-tflite' }, inputs: { image: floatTensor(REFERENCE.conv.input) } })
    t.ok(maxDiff(rowsOf(conv.outputs.output_0), REFERENCE.conv.output) <= TOLERANCE, `TFLite via ${where} matches the reference`)
    const bad = await client.predict({ model_spec: { name: 'conv-tflite' }, inputs: { image: floatTensor([[[1]]]) } }).catch(err => err)
    t.equal(bad.code, 3, `a bad input via ${where} is INVALID_ARGUMENT`)
    t.match(bad.details, /inputs\.image\.tensor_shape: has shape \[1, 1, 1\]/, 'naming the input')
    const meta = await client.metadata({ model_spec: { name: 'conv-tflite' }, metadata_field: ['signature_def'] })
    t.match(signatureOf(meta.metadata.signature_def).signature_def.serving_default.inputs.image, { dtype: 'DT_FLOAT', tensor_shape: { dim: [{ size: '-1' }, { size: '28' }, { size: '28' }, { size: '1' }] } }, `metadata via ${where}`)
    const status = await client.status({ model_spec: { name: 'mlp-onnx' } })
    t.match(status.model_version_status, [{ version: '1', state: 'AVAILABLE' }], `status via ${where}`)
    const unknown = await client.predict({ model_spec: { name: 'nothing-here' }, inputs: {} }).catch(err => err)
    t.equal(unknown.code, 5, `an unknown model via ${where} is NOT_FOUND`)
  }
  const refused = await anonymous.predict({ model_spec: { name: 'mlp-onnx' }, inputs: { readings: floatTensor(REFERENCE.mlp.input) } }).catch(err => err)
  t.equal(refused.code, 16, 'the coordinator refuses a call without a token: UNAUTHENTICATED')
})
