import { copyFile, mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { freePort } from '../helpers/ports.ts'
import { loadFleet } from '../../node/identity/fleet.ts'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { decodeTensor, encodeTensor } from '../../protocols/tf-serving/tensor-proto.ts'
import { Cluster } from '../helpers/cluster.ts'
import { agentGrpc, floatTensor, readTensorProto, rowsOf, servedMsOf, servingClient, signatureOf, tensorBytes } from '../helpers/grpc.ts'
import { fixture, maxDiff, MODEL_FIXTURES, REFERENCE, saveTfjsTwin } from '../helpers/model-fixtures.ts'

/**
 * Issue 11's conformance: every model fixture (ONNX, fixed- and
 * dynamic-batch TFLite) and the TF.js twins built from weights.json, served
 * by one agent process, answer TensorFlow's reference outputs within 1e-5
 * through REST (row and columnar forms) and through gRPC (TF Serving's
 * PredictionService), with metadata and status as TF Serving reports them.
 */
const TOLERANCE = 1e-5

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const grpcPort = await freePort()
const gw = await cluster.addNode('gw', { config: { grpc: { port: grpcPort }, runtime: { maxBatchSize: 8 } } })
await cluster.start('gw')
await agentGrpc(gw.dir)
const fleet = await loadFleet(cluster.fleetDir)

const models = [
  ...MODEL_FIXTURES.map(f => ({ name: f.file.replace('.', '-'), net: f.net, format: f.format as string, input: f.input as string, output: f.output as string, file: f.file as string | undefined })),
  // Keras names a Sequential's layers dense/dense_1…; the TF.js twin's names are read from its own topology
  { name: 'mlp-tfjs', net: 'mlp' as const, format: 'tfjs-layers', input: '', output: '', file: undefined },
  { name: 'conv-tfjs', net: 'conv' as const, format: 'tfjs-layers', input: '', output: '', file: undefined }
]

async function api (method: string, path: string, body?: unknown, type = 'application/json'): Promise<{ status: number, body: any, headers: Headers }> {
  // with the node's API token: uploads and instances need it
  const res = await fetch(gw.api + path, { method, headers: { ...await cluster.auth('gw'), ...(body == null ? {} : { 'content-type': type }) }, body: body == null ? undefined : type === 'application/json' ? JSON.stringify(body) : body as Buffer, signal: AbortSignal.timeout(120_000) })
  return { status: res.status, body: await res.json().catch(() => undefined), headers: res.headers }
}

await t.test('bundle every fixture and run it on the agent', async t => {
  for (const m of models) {
    const dir = join(cluster.root, 'models', m.name)
    await mkdir(dir, { recursive: true })
    if (m.file == null) await saveTfjsTwin(m.net, dir)
    else await copyFile(fixture(m.file), join(dir, m.file))
    const built = await buildBundle({ modelDir: dir, name: m.name, version: '1', signer: { key: fleet.privateKey }, out: join(cluster.root, `${m.name}.zip`) })
    t.equal(built.manifest.model.format, m.format, `${m.name}: manifest format ${m.format}`)
    if (m.file == null) {
      m.input = built.manifest.inputs[0]!.name
      m.output = built.manifest.outputs[0]!.name
    }
    t.equal(built.manifest.inputs[0]!.name, m.input, `${m.name}: input name read from the model`)
    const uploaded = await api('POST', '/v1/bundles', await readFile(built.out), 'application/zip')
    t.equal(uploaded.status, 201, `${m.name}: uploaded`)
    const run = await api('POST', '/v1/instances', { bundle: built.digest })
    t.equal(run.status, 201, `${m.name}: running ${JSON.stringify(run.body?.message ?? run.body?.backend)}`)
  }
  const status = await api('GET', '/v1/status')
  t.match(status.body.runtime.backends, { tfjs: { backend: 'wasm', inUse: true }, onnx: { backend: 'onnx-native', inUse: true }, tflite: { backend: 'litert-wasm', inUse: true } }, 'status names the backend of each runtime')
})

await t.test('REST: every model matches TensorFlow\'s reference within 1e-5, row and columnar', async t => {
  for (const m of models) {
    const ref = REFERENCE[m.net]
    const rows = await api('POST', `/v1/models/${m.name}:predict`, { instances: ref.input })
    t.equal(rows.status, 200, `${m.name}: ${JSON.stringify(rows.body).slice(0, 200)}`)
    const d = maxDiff(rows.body.predictions, ref.output)
    t.ok(d <= TOLERANCE, `${m.name} (REST rows): max difference ${d.toExponential(2)}`)
    t.ok((servedMsOf(rows.headers.get('server-timing')) ?? -1) > 0, `${m.name}: Server-Timing gives the in-process time (${rows.headers.get('server-timing')})`)
    const cols = await api('POST', `/v1/models/${m.name}:predict`, { inputs: { [m.input]: ref.input } })
    t.ok(maxDiff(cols.body.outputs, ref.output) <= TOLERANCE, `${m.name} (REST columnar, named input): matches`)
  }
})

await t.test('gRPC: every model matches through TF Serving\'s Predict; metadata and status as TF Serving gives them', async t => {
  const client = await servingClient(`127.0.0.1:${grpcPort}`)
  t.teardown(() => { client.close() })
  for (const m of models) {
    const ref = REFERENCE[m.net]
    const res = await client.predict({ model_spec: { name: m.name }, inputs: { [m.input]: floatTensor(ref.input) } })
    const d = maxDiff(rowsOf(res.outputs[m.output]), ref.output)
    t.ok(d <= TOLERANCE, `${m.name} (gRPC): max difference ${d.toExponential(2)}`)
    t.match(res.model_spec, { name: m.name, version: { value: '1' } })
    const timed = await client.predictTimed({ model_spec: { name: m.name }, inputs: { [m.input]: floatTensor(ref.input) } })
    t.ok(maxDiff(rowsOf(timed.response.outputs[m.output]), ref.output) <= TOLERANCE && (timed.servedMs ?? -1) > 0, `${m.name} (gRPC): the server-timing trailer gives the in-process time (${timed.servedMs} ms)`)

    const meta = await client.metadata({ model_spec: { name: m.name }, metadata_field: ['signature_def'] })
    const sig = signatureOf(meta.metadata.signature_def).signature_def.serving_default
    t.match(sig.inputs[m.input], { dtype: 'DT_FLOAT', tensor_shape: { dim: [{}, { size: m.net === 'mlp' ? '16' : '28' }] } }, `${m.name}: signature input`)
    t.ok(sig.outputs[m.output] != null, `${m.name}: signature output ${m.output}`)

    const status = await client.status({ model_spec: { name: m.name } })
    t.match(status.model_version_status, [{ version: '1', state: 'AVAILABLE', status: { error_code: 'OK' } }], `${m.name}: AVAILABLE`)
  }
})

await t.test('TensorProto fixtures written by TensorFlow: decoded, answered, encoded as TensorFlow does', async t => {
  const client = await servingClient(`127.0.0.1:${grpcPort}`)
  t.teardown(() => { client.close() })
  const content = readTensorProto(await readFile(fixture('mlp-input.tensor_content.pb')))
  const vals = readTensorProto(await readFile(fixture('mlp-input.float_val.pb')))
  for (const [what, proto] of [['tensor_content', content], ['float_val', vals]] as const) {
    const t4 = decodeTensor(proto, 'inputs.readings')
    t.same(t4.shape, [4, 16], `${what}: shape [4, 16]`)
    t.ok(maxDiff(rowsOf(encodeTensor(t4)), REFERENCE.mlp.input) === 0, `${what}: decodes to the reference input exactly`)
  }
  const outBytes = await readFile(fixture('mlp-output.tensor_content.pb'))
  const refOut = readTensorProto(outBytes)
  t.same(tensorBytes(encodeTensor(decodeTensor(refOut, 'outputs.scores'))), outBytes, 'the reference output re-encodes to mlp-output.tensor_content.pb byte for byte')
  for (const [what, proto] of [['tensor_content', content], ['float_val', vals]] as const) {
    // the messages as a TF Serving client sends them
    const res = await client.predict({ model_spec: { name: 'mlp-onnx' }, inputs: { readings: proto } })
    const scores = res.outputs.scores
    t.ok(maxDiff(rowsOf(scores), rowsOf(refOut)) <= TOLERANCE, `${what} in: the output matches mlp-output.tensor_content.pb`)
    const bytes = tensorBytes(scores)
    t.equal(bytes.length, outBytes.length, `${what} in: the response encodes to the same size`)
    t.same(bytes.subarray(0, bytes.length - 32), outBytes.subarray(0, outBytes.length - 32), `${what} in: dtype and shape encoded as TensorFlow does, content in tensor_content`)
  }
})

await t.test('bad requests: 400 and INVALID_ARGUMENT naming the input; unknown models NOT_FOUND', async t => {
  const client = await servingClient(`127.0.0.1:${grpcPort}`)
  t.teardown(() => { client.close() })
  const short = await api('POST', '/v1/models/mlp-onnx:predict', { instances: [(REFERENCE.mlp.input[0] as number[]).slice(0, 15)] })
  t.equal(short.status, 400)
  t.match(short.body, { code: 'ERR_INVALID_INPUT', field: 'instances[0]', message: /expected 16 values, got 15/ })
  const wrongName = await api('POST', '/v1/models/mlp-b1-tflite:predict', { inputs: { window: REFERENCE.mlp.input } })
  t.equal(wrongName.status, 400)
  t.match(wrongName.body.message, /inputs\.window: is not an input of this model/)

  const shape = await client.predict({ model_spec: { name: 'conv-dyn-tflite' }, inputs: { image: floatTensor([[[1], [2]]]) } }).catch(err => err)
  t.equal(shape.code, 3, 'INVALID_ARGUMENT')
  t.match(shape.details, /inputs\.image\.tensor_shape: has shape \[1, 2, 1\]; the model takes \[-1, 28, 28, 1\]/)
  const content = await client.predict({ model_spec: { name: 'mlp-onnx' }, inputs: { readings: { dtype: 'DT_FLOAT', tensor_shape: { dim: [{ size: 1 }, { size: 16 }] }, tensor_content: Buffer.alloc(60) } } }).catch(err => err)
  t.equal(content.code, 3)
  t.match(content.details, /inputs\.readings\.tensor_content: holds 60 bytes; shape \[1, 16\] of float32 needs 64/)
  const missing = await client.predict({ model_spec: { name: 'mlp-onnx' }, inputs: {} }).catch(err => err)
  t.equal(missing.code, 3)
  t.match(missing.details, /inputs\.readings: is required/)
  const strings = await client.predict({ model_spec: { name: 'mlp-onnx' }, inputs: { readings: { dtype: 'DT_STRING', tensor_shape: { dim: [{ size: 1 }, { size: 16 }] }, string_val: Array.from({ length: 16 }, () => Buffer.from('x')) } } }).catch(err => err)
  t.equal(strings.code, 3)
  t.match(strings.details, /inputs\.readings\.dtype: is string; the model takes float32/)
  const unknown = await client.predict({ model_spec: { name: 'nope' }, inputs: {} }).catch(err => err)
  t.equal(unknown.code, 5, 'NOT_FOUND')
  const filter = await client.predict({ model_spec: { name: 'mlp-onnx' }, inputs: { readings: floatTensor(REFERENCE.mlp.input) }, output_filter: ['logits'] }).catch(err => err)
  t.equal(filter.code, 3)
  t.match(filter.details, /output_filter\[0\]: "logits" is not an output/)
})
