import { generateKeyPairSync } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import t from 'tap'
import { errorReply } from '../../node/api/errors.ts'
import { grpcError } from '../../node/api/grpc/errors.ts'
import { UnpackedBundles } from '../../node/runtime/bundle-store.ts'
import { Runtime } from '../../node/runtime/runtime.ts'
import { predictLocal } from '../../node/runtime/serving.ts'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { ZipShelf } from '../helpers/zips.ts'
import { fixture, REFERENCE } from '../helpers/model-fixtures.ts'
import type { Database } from '../../node/store/db.ts'

/**
 * Status that tells the truth: LOADING until the instance can predict, a
 * predict during loading waits briefly and is then refused as 503 with
 * Retry-After (gRPC UNAVAILABLE), AVAILABLE once loaded.
 */
const root = await mkdtemp(join(tmpdir(), 'gatemesh-loading-'))
const fleet = generateKeyPairSync('ed25519')
const db = new Level<string, unknown>(join(root, 'db'), { valueEncoding: 'json' }) as Database
await db.open()
const shelf = new ZipShelf()
const bundles = new UnpackedBundles({ dataDir: root, fleetKey: fleet.publicKey, zips: shelf })
const components = { node: 'self', sensors: new Map(), outbox: { enqueue: async () => ({}) }, logger: pino({ level: 'silent' }), fleetKey: fleet.publicKey, bundles, db, registry: { set: async () => ({}) as any } }
t.teardown(async () => {
  await db.close()
  await rm(root, { recursive: true, force: true })
})

const dir = join(root, 'model')
await mkdir(dir)
await copyFile(fixture('conv-dyn.tflite'), join(dir, 'conv.tflite'))
const built = await buildBundle({ modelDir: dir, name: 'conv', version: '1', signer: { key: fleet.privateKey }, out: join(root, 'conv.zip') })
const digest = await shelf.add(built.out)

t.test('a predict that cannot wait for a loading model is a 503 with Retry-After', async t => {
  const runtime = new Runtime(components, { dataDir: root, loadWaitMs: 0 })
  await runtime.start()
  t.teardown(async () => { await runtime.stop() })
  const running = runtime.run({ bundle: digest }, { persist: false })
  for (let i = 0; i < 500 && !runtime.has('conv'); i++) await new Promise(resolve => setTimeout(resolve, 5))
  const instance = runtime.get('conv')
  t.match(instance.status(), { model_version_status: [{ version: '1', state: 'LOADING' }] }, 'LOADING while the workers load it')
  const err = await predictLocal(runtime, 'conv', undefined, { instances: REFERENCE.conv.input }).catch(e => e)
  t.equal(err.code, 'ERR_MODEL_LOADING')
  const reply = errorReply(err)
  t.equal(reply.status, 503, 'REST: 503')
  t.equal(reply.body.retryAfterSec, 1, 'with Retry-After: 1')
  t.match(grpcError(err), { code: 14, retryAfterSec: 1 }, 'gRPC: UNAVAILABLE with a retry-after trailer')
  await running
  t.match(instance.status(), { model_version_status: [{ state: 'AVAILABLE' }] }, 'AVAILABLE once it can predict')
  const ok = await predictLocal(runtime, 'conv', undefined, { instances: REFERENCE.conv.input })
  t.equal((ok.predictions as unknown[]).length, 2)
})

t.test('by default a predict during loading waits for the model and is answered', async t => {
  const runtime = new Runtime(components, { dataDir: join(root, 'b'), loadWaitMs: 60_000 })
  await runtime.start()
  t.teardown(async () => { await runtime.stop() })
  const running = runtime.run({ bundle: digest }, { persist: false })
  for (let i = 0; i < 500 && !runtime.has('conv'); i++) await new Promise(resolve => setTimeout(resolve, 5))
  t.equal(runtime.get('conv').state, 'starting')
  const answer = await predictLocal(runtime, 'conv', undefined, { instances: REFERENCE.conv.input })
  t.equal((answer.predictions as unknown[]).length, 2, 'answered once loaded')
  await running
})
