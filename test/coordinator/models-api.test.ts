import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import yazl from 'yazl'
import { deploymentKey } from '../../node/scheduler/keys.ts'
import { verifyBundle } from '../../packaging/bundle/index.ts'
import { verifyRegistryWrite } from '../../packaging/trust.ts'
import { waitFor } from '../helpers/cluster.ts'
import { httpClient, injectClient, PASSWORDS, testCoordinator } from '../helpers/coordinator-app.ts'
import { craftZip } from '../helpers/zip-craft.ts'
import { ANOMALY_FILES, anomalyConfig, anomalyUploadForm, multipartPayload } from '../helpers/model-upload.ts'
import { fixture } from '../helpers/model-fixtures.ts'

const LIMIT = 512 * 1024
const coordinator = await testCoordinator({ maxUploadBytes: LIMIT })
t.teardown(coordinator.close)
const client = injectClient(coordinator.app)
const http = await httpClient(coordinator.app)
const login = async (username: string, password: string): Promise<string> =>
  (await client.request('POST', '/api/v1/auth/login', { body: { username, password } })).body.token
const dev = await login('dev', PASSWORDS.dev)
const ops = await login('ops', PASSWORDS.ops)

/** Upload through app.inject(). */
async function inject (form: FormData, token = dev): Promise<{ status: number, body: any }> {
  const { payload, headers } = await multipartPayload(form)
  const res = await coordinator.app.inject({ method: 'POST', url: '/api/v1/models', payload, headers: { ...headers, authorization: `Bearer ${token}` } })
  return { status: res.statusCode, body: res.json() }
}

/** Upload over real HTTP. */
async function post (form: FormData, token = dev): Promise<{ status: number, body: any }> {
  const res = await fetch(`${http.base!}/api/v1/models`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(60_000) })
  return { status: res.status, body: await res.json().catch(() => undefined) }
}

const zipOf = async (entries: Array<[string, Uint8Array]>): Promise<Buffer> => await new Promise((resolve, reject) => {
  const zip = new yazl.ZipFile()
  for (const [name, bytes] of entries) zip.addBuffer(Buffer.from(bytes), name)
  zip.end()
  const parts: Buffer[] = []
  zip.outputStream.on('data', (d: Buffer) => parts.push(d)).on('end', () => { resolve(Buffer.concat(parts)) }).on('error', reject)
})

t.test('upload a TF.js model with config.json: stored, signed, published, listed, downloadable', async t => {
  const res = await post(await anomalyUploadForm({ action: 'console.log("notified")\n' }))
  t.equal(res.status, 201, JSON.stringify(res.body))
  t.match(res.body, {
    name: 'anomaly',
    version: '1.0.0',
    owner: 'dev',
    format: 'tfjs-layers',
    inputs: [{ dtype: 'float32', shape: [-1, 16] }],
    outputs: [{ name: 'class', labels: ['normal', 'anomaly'] }],
    action: 'action.js',
    files: ['model.json', 'group1-shard1of1.bin'],
    metadata: { deploymentType: 'gateway', modelType: 'anomaly detection', outputFormat: 'softmax over [normal, anomaly]' }
  })
  t.match(res.body.digest, /^[0-9a-f]{64}$/)
  t.same(res.body.config, anomalyConfig(), 'config.json kept as given')

  const advert = coordinator.self.registry.value<any>(`bundle/${res.body.digest as string}/${coordinator.self.peerId.toString()}`)
  t.match(advert, { complete: true, name: 'anomaly', version: '1.0.0' }, 'published into the mesh under its digest, name and version')

  const list = await client.request('GET', '/api/v1/models', { token: dev })
  t.equal(list.status, 200)
  t.match(list.body, { count: 1, models: [{ name: 'anomaly', versions: ['1.0.0'], latest: { digest: res.body.digest } }] })
  t.equal((await client.request('GET', '/api/v1/models?owner=somebody', { token: dev })).body.count, 0, 'filtered by owner')
  const versions = await client.request('GET', '/api/v1/models/anomaly/versions', { token: dev })
  t.match(versions.body, { name: 'anomaly', versions: [{ version: '1.0.0', owner: 'dev' }] })
  t.equal((await client.request('GET', '/api/v1/models/nothing/versions', { token: dev })).status, 404)

  const download = await fetch(`${http.base!}/api/v1/models/anomaly/versions/1.0.0/bundle`, { headers: { authorization: `Bearer ${dev}` } })
  t.equal(download.status, 200)
  t.match(download.headers.get('content-disposition'), /anomaly-1\.0\.0\.zip/)
  const zip = new Uint8Array(await download.arrayBuffer())
  const verified = await verifyBundle(zip, { fleetPublicKey: coordinator.fleet.publicKey })
  t.equal(verified.digest, res.body.digest, 'the download is the signed bundle, digest and all')
  t.equal(verified.signer, 'fleet', 'signed with the fleet key')
  t.same(verified.manifest.files.map(f => f.path).sort(), ['action.js', 'config.json', 'model/group1-shard1of1.bin', 'model/model.json'])
})

t.test('the same name and version again is a 409, whoever uploads it', async t => {
  const again = await inject(await anomalyUploadForm())
  t.equal(again.status, 409)
  t.match(again.body, { code: 'ERR_CONFLICT', field: 'body.version' })
  const admin = await login('admin', PASSWORDS.admin)
  t.equal((await post(await anomalyUploadForm(), admin)).status, 409, 'another user cannot take it either')
})

t.test('a zip of the model (inside a folder) is a model too', async t => {
  const files = await Promise.all(ANOMALY_FILES.map(async f => [`export/${f.split('/').pop()!}`, await readFile(f)] as [string, Uint8Array]))
  const res = await inject(await anomalyUploadForm({ version: '1.1.0', files: [['anomaly.zip', await zipOf(files)]] }))
  t.equal(res.status, 201, JSON.stringify(res.body))
  t.same(res.body.files, ['model.json', 'group1-shard1of1.bin'])
  const list = await client.request('GET', '/api/v1/models', { token: dev })
  t.same(list.body.models[0].versions, ['1.1.0', '1.0.0'], 'newest first')

  const evilPath = join(coordinator.dir, 'evil.zip')
  await craftZip(evilPath, [{ name: '../model.json', data: Buffer.from('{}') }])
  const evil = await inject(await anomalyUploadForm({ version: '1.2.0', files: [['evil.zip', await readFile(evilPath)]] }))
  t.equal(evil.status, 400, 'a zip entry outside the folder is refused')
  t.match(evil.body, { field: 'body.model', message: /relative path/ })
})

t.test('malformed uploads are 400s naming the field', async t => {
  const cases: Array<[string, FormData, string, RegExp?]> = [
    ['no name', await (async () => { const f = await anomalyUploadForm(); f.delete('name'); return f })(), 'body.name'],
    ['a bad version', await anomalyUploadForm({ version: '../1' }), 'body.version'],
    ['an unknown field', await anomalyUploadForm({ version: '2.0.0', fields: { colour: 'blue' } }), 'body.colour'],
    ['config.json that is not JSON', await anomalyUploadForm({ version: '2.0.0', config: '{"rules": [' }), 'body.config', /not JSON/],
    ['a rule with a bad action', await anomalyUploadForm({ version: '2.0.0', config: { rules: [{ name: 'r', when: 'score > 1', actions: [{ type: 'email', to: 'nobody' }] }] } }), 'body.config.rules[0].actions[0]'],
    ['an output spec of an unknown type', await anomalyUploadForm({ version: '2.0.0', fields: { outputs: '[{"name":"class","dtype":"complex64","shape":[-1,2]}]' } }), 'body.outputs.0.dtype'],
    ['an output spec the model disagrees with', await anomalyUploadForm({ version: '2.0.0', fields: { outputs: '[{"name":"class","dtype":"float64","shape":[-1,2]}]' } }), 'body.outputs[0].dtype', /the model's output .* is float32/],
    ['an input spec of the wrong size', await anomalyUploadForm({ version: '2.0.0', fields: { inputs: '[{"name":"window","dtype":"float32","shape":[-1,17]}]' } }), 'body.inputs[0].shape', /dimension 1 is 17/],
    ['no model.json', await anomalyUploadForm({ version: '2.0.0', files: [['weights.bin', new Uint8Array(16)]] }), 'body.model', /model\.json/],
    ['a missing weight shard', await anomalyUploadForm({ version: '2.0.0', files: [['model.json', await readFile(ANOMALY_FILES[0]!)]] }), 'body.model', /group1-shard1of1\.bin, which was not uploaded/]
  ]
  for (const [what, form, field, message] of cases) {
    const res = await inject(form)
    t.equal(res.status, 400, `${what}: 400`)
    t.equal(res.body.field?.startsWith(field), true, `${what}: names ${res.body.field} (${res.body.message})`)
    if (message != null) t.match(res.body.message, message)
  }
  const garbage = await inject(await anomalyUploadForm({ version: '2.0.0', files: [['model.json', Buffer.from('{"modelTopology": {"class_name": "Sequential", "config": {"layers": [{"class_name": "Nonsense", "config": {}}]}}, "weightsManifest": []}')]] }))
  t.equal(garbage.status, 422, 'a model.json TF.js cannot load is a 422')
  t.match(garbage.body, { code: 'ERR_MODEL_LOAD' })
  const json = await client.request('POST', '/api/v1/models', { token: dev, body: { name: 'x', version: '1', model: 'upload:0' } })
  t.equal(json.status, 415, 'a JSON body cannot name uploaded files')
  t.equal((await client.request('GET', '/api/v1/models', { token: dev })).body.models[0].versions.length, 2, 'nothing was stored by the failures')
})

/** An upload form of one model file, with optional specs. */
async function fileForm (name: string, version: string, file: string, bytes: Uint8Array, fields: Record<string, string> = {}): Promise<FormData> {
  const form = new FormData()
  form.set('name', name)
  form.set('version', version)
  for (const [k, v] of Object.entries(fields)) form.set(k, v)
  form.append('model', new Blob([bytes]), file)
  return form
}

t.test('ONNX and TFLite uploads: specs read from the model, checked against the user\'s, corrupt files refused', async t => {
  const onnx = await readFile(fixture('mlp.onnx'))
  const tflite = await readFile(fixture('mlp-dyn.tflite'))
  const stored = (): Promise<number> => client.request('GET', '/api/v1/models', { token: dev }).then(r => r.body.count as number)
  const before = await stored()

  const o = await post(await fileForm('mlp-onnx', '1', 'mlp.onnx', onnx, { outputs: JSON.stringify([{ name: 'scores', dtype: 'float32', shape: [-1, 2], labels: ['normal', 'anomaly'] }]) }))
  t.equal(o.status, 201, JSON.stringify(o.body))
  t.match(o.body, { format: 'onnx', files: ['mlp.onnx'], inputs: [{ name: 'readings', dtype: 'float32', shape: [-1, 16] }], outputs: [{ name: 'scores', shape: [-1, 2], labels: ['normal', 'anomaly'] }] })
  const bundle = await verifyBundle(coordinator.models.bundlePath(coordinator.models.get('mlp-onnx', '1')), { fleetPublicKey: coordinator.fleet.publicKey })
  t.match(bundle.manifest, { runtime: 'onnx', model: { format: 'onnx', entry: 'model/mlp.onnx' } }, 'the manifest names the format')

  const l = await post(await fileForm('mlp-tflite', '1', 'mlp.tflite', tflite))
  t.equal(l.status, 201, JSON.stringify(l.body))
  t.match(l.body, { format: 'tflite', inputs: [{ name: 'readings', dtype: 'float32', shape: [-1, 16] }], outputs: [{ name: 'output_0', dtype: 'float32', shape: [-1, 2] }] })

  const zipped = await post(await fileForm('mlp-zip', '1', 'model.zip', await zipOf([['export/mlp.onnx', onnx]])))
  t.equal(zipped.status, 201, `an .onnx inside a zip folder: ${JSON.stringify(zipped.body)}`)

  const cases: Array<[string, FormData, number, string, RegExp]> = [
    ['a truncated .onnx', await fileForm('bad', '1', 'mlp.onnx', onnx.subarray(0, Math.floor(onnx.length / 2))), 422, 'ERR_MODEL_LOAD', /mlp\.onnx: ONNX Runtime cannot load this model/],
    ['a truncated .tflite', await fileForm('bad', '1', 'mlp.tflite', tflite.subarray(0, 1000)), 422, 'ERR_MODEL_LOAD', /mlp\.tflite: (LiteRT cannot load|not a TensorFlow Lite)/],
    ['text named .tflite', await fileForm('bad', '1', 'x.tflite', Buffer.from('hello, world')), 422, 'ERR_MODEL_LOAD', /not a TensorFlow Lite model/],
    ['an ONNX input spec with another name', await fileForm('bad', '1', 'mlp.onnx', onnx, { inputs: '[{"name":"window","dtype":"float32","shape":[-1,16]}]' }), 400, 'ERR_BAD_REQUEST', /body\.inputs\[0\]\.name: the model has no input "window" \(it has "readings"\)/],
    ['a TFLite output spec of the wrong dtype', await fileForm('bad', '1', 'mlp.tflite', tflite, { outputs: '[{"name":"output_0","dtype":"int32","shape":[-1,2]}]' }), 400, 'ERR_BAD_REQUEST', /body\.outputs\[0\]\.dtype/],
    ['two models at once', await fileForm('bad', '1', 'mlp.onnx', onnx).then(f => { f.append('model', new Blob([tflite]), 'mlp.tflite'); return f }), 400, 'ERR_BAD_REQUEST', /holds 2 models/],
    ['an .onnx with a stray file', await fileForm('bad', '1', 'mlp.onnx', onnx).then(f => { f.append('model', new Blob([Buffer.from('x')]), 'notes.txt'); return f }), 400, 'ERR_BAD_REQUEST', /one file; remove notes\.txt/]
  ]
  for (const [what, form, status, code, message] of cases) {
    const res = await inject(form)
    t.equal(res.status, status, `${what}: ${status} (${JSON.stringify(res.body)})`)
    t.equal(res.body.code, code, `${what}: ${code}`)
    t.match(res.body.message, message, `${what}: ${res.body.message}`)
  }
  t.equal(await stored(), before + 3, 'the refused uploads stored nothing')
  t.equal(coordinator.models.has('bad', '1'), false)
})

t.test('uploads past the limit are 413s', async t => {
  const big = new Uint8Array(LIMIT + 1024)
  const streamed = await inject(await anomalyUploadForm({ version: '3.0.0', files: [['model.json', await readFile(ANOMALY_FILES[0]!)], ['group1-shard1of1.bin', big]] }))
  t.equal(streamed.status, 413, 'counted while streaming (app.inject)')
  t.match(streamed.body, { code: 'ERR_UPLOAD_TOO_LARGE', field: 'body.model' })
  const form = await anomalyUploadForm({ version: '3.0.0', files: [['model.json', await readFile(ANOMALY_FILES[0]!)], ['group1-shard1of1.bin', new Uint8Array(4 * LIMIT)]] })
  const browserLike = await post(form)
  t.equal(browserLike.status, 413, 'a FormData upload over real HTTP')
  t.match(browserLike.body, { code: 'ERR_UPLOAD_TOO_LARGE' })
  const { payload, headers } = await multipartPayload(form)
  const declared = await fetch(`${http.base!}/api/v1/models`, { method: 'POST', body: payload, headers: { ...headers, 'content-length': String(payload.byteLength), authorization: `Bearer ${dev}` } })
  t.equal(declared.status, 413, 'refused by its Content-Length over real HTTP')
  t.match(await declared.json(), { code: 'ERR_UPLOAD_TOO_LARGE', field: 'body', message: /larger than the upload limit/ })
  t.equal((await client.request('GET', '/api/v1/models', { token: dev })).body.models[0].versions.includes('3.0.0'), false, 'nothing stored')
})

t.test('roles without the models or deployments service get 403', async t => {
  t.equal((await inject(await anomalyUploadForm({ version: '4.0.0' }), ops)).status, 403, 'operator uploads: 403')
  t.equal((await client.request('GET', '/api/v1/models', { token: ops })).status, 403)
  t.equal((await client.request('GET', '/api/v1/models/anomaly/versions/1.0.0/bundle', { token: ops })).status, 403)
  t.equal((await client.request('POST', '/api/v1/deployments', { token: ops, body: { id: 'x', model: { name: 'anomaly', version: '1.0.0' } } })).status, 403)
  t.equal((await client.request('GET', '/api/v1/deployments', { token: ops })).status, 403)
  t.equal((await client.request('DELETE', '/api/v1/deployments/x', { token: ops })).status, 403)
  t.equal((await http.request('POST', '/api/v1/models', { raw: 'x', headers: { 'content-type': 'multipart/form-data; boundary=x' } })).status, 401, 'no token: 401 before any parsing')
})

t.test('deployments: validated, fleet-signed, written to the registry; status; tombstone', async t => {
  const spec = {
    id: 'temps',
    model: { name: 'anomaly', version: '1.0.0' },
    replicas: 2,
    placement: { role: 'gateway', sensorTypes: ['temperature'], policy: 'spread' },
    window: { start: new Date(Date.now() - 60_000).toISOString(), end: new Date(Date.now() + 3_600_000).toISOString() },
    instance: { input: { sensors: ['temp-1'] } }
  }
  const created = await http.request('POST', '/api/v1/deployments', { token: dev, body: spec })
  t.equal(created.status, 201, JSON.stringify(created.body))
  t.match(created.body, { id: 'temps', model: 'anomaly', replicas: 2, createdBy: 'dev', window: { active: true }, predict: `${http.base!}/api/v1/models/anomaly:predict` })
  const entry = coordinator.self.registry.get(deploymentKey('temps'))!
  t.match(entry.value, { id: 'temps', replicas: 2, placement: { policy: 'spread' } })
  t.equal(entry.auth != null, true, 'the entry carries an authorisation')
  const auth = await verifyRegistryWrite(entry.auth!, { key: deploymentKey('temps'), valueJson: JSON.stringify(entry.value), writer: entry.writer, ts: entry.ts }, coordinator.fleet.publicKey)
  t.equal(auth.signer, 'fleet', 'signed by the fleet key')
  await waitFor(() => coordinator.gateway.registry.value(deploymentKey('temps')) != null, 'the deployment to reach the gateway', 5000)
  t.pass('it travelled to the other registry')

  const dup = await client.request('POST', '/api/v1/deployments', { token: dev, body: spec })
  t.equal(dup.status, 409)
  t.match(dup.body, { field: 'body.id' })

  const bad: Array<[string, Record<string, unknown>, string]> = [
    ['an unknown field', { ...spec, id: 'b1', colour: 'blue' }, 'body.colour'],
    ['replicas as text', { ...spec, id: 'b2', replicas: 'two' }, 'body.replicas'],
    ['a window that ends before it starts', { ...spec, id: 'b3', window: { start: spec.window.end, end: spec.window.start } }, 'body.window.end'],
    ['a pinned deployment without nodes', { ...spec, id: 'b4', placement: { policy: 'pinned' } }, 'body.placement.nodes'],
    ['a bad instance override', { ...spec, id: 'b5', instance: { rules: [{ name: 'r', when: 'x', actions: [{ type: 'teleport' }] }] } }, 'body.instance.rules[0].actions[0].type'],
    ['a model nobody has', { ...spec, id: 'b6', model: { name: 'anomaly', version: '9.9.9' } }, 'body.model'],
    ['a bad cron', { ...spec, id: 'b7', window: undefined, schedule: { cron: 'every tuesday', durationSec: 60 } }, 'body.schedule.cron']
  ]
  for (const [what, body, field] of bad) {
    const res = await client.request('POST', '/api/v1/deployments', { token: dev, body: JSON.parse(JSON.stringify(body)) })
    t.equal(res.status, 400, `${what}: 400`)
    t.equal(res.body.field, field, `${what}: names ${field} (${res.body.message})`)
  }

  const list = await client.request('GET', '/api/v1/deployments', { token: dev })
  t.match(list.body, { count: 1, deployments: [{ id: 'temps', replicas: 2 }] })
  t.equal((await client.request('GET', '/api/v1/deployments/temps', { token: dev })).body.id, 'temps')
  t.equal((await client.request('GET', '/api/v1/deployments/nope', { token: dev })).status, 404)

  t.equal((await client.request('DELETE', '/api/v1/deployments/temps', { token: dev })).status, 204)
  const tomb = coordinator.self.registry.get(deploymentKey('temps'))!
  t.equal(tomb.deleted, true, 'a tombstone')
  await verifyRegistryWrite(tomb.auth!, { key: deploymentKey('temps'), valueJson: null, writer: tomb.writer, ts: tomb.ts }, coordinator.fleet.publicKey)
  t.pass('the tombstone is fleet-signed')
  t.equal((await client.request('GET', '/api/v1/deployments/temps', { token: dev })).status, 404)
  t.equal((await client.request('DELETE', '/api/v1/deployments/temps', { token: dev })).status, 404)
})

t.test('predict through the coordinator: validated, and 404 for a model running nowhere', async t => {
  const res = await client.request('POST', '/api/v1/models/anomaly:predict', { token: ops, body: { instances: [[0.1]] } })
  t.equal(res.status, 404)
  t.match(res.body, { code: 'ERR_NOT_FOUND', message: /not deployed anywhere/ })
  const bad = await client.request('POST', '/api/v1/models/anomaly:predict', { token: ops, body: { rows: [] } })
  t.equal(bad.status, 400)
  t.equal(bad.body.field, 'body.rows')
  t.equal((await client.request('POST', '/api/v1/models/anomaly:explain', { token: ops, body: { instances: [] } })).status, 404)
})
