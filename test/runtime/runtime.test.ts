import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm, stat, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import t from 'tap'
import { Runtime } from '../../node/runtime/runtime.ts'
import { openDatabase } from '../../node/store/db.ts'
import { DiskGuard } from '../../node/store/disk-guard.ts'
import { parsePredictBody } from '../../node/runtime/tensors.ts'
import { SimulatedSensor } from '../../sensors/simulated.ts'
import { UnpackedBundles } from '../../node/runtime/bundle-store.ts'
import { ZipShelf } from '../helpers/zips.ts'
import { anomalyBundleZip, SCALE, temperatures } from '../helpers/anomaly-bundle.ts'
import { waitFor } from '../helpers/cluster.ts'
import type { EnqueueInput } from '../../node/outbox/outbox.ts'
import type { Database } from '../../node/store/db.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-runtime-'))
const fleet = generateKeyPairSync('ed25519')
const db = new Level<string, unknown>(join(root, 'db'), { valueEncoding: 'json' }) as Database
await db.open()
t.teardown(async () => {
  await db.close()
  await rm(root, { recursive: true, force: true })
})

const scaled = (xs: number[]): number[] => xs.map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
const queued: EnqueueInput[] = []
const registry = new Map<string, unknown>()
const sensor = new SimulatedSensor({ id: 'temp1', waveform: 'csv', rateHz: 200, offset: 0, amplitude: 1, periodMs: 1000, noise: 0, seed: 1, csv: { path: join(root, 'temps.csv'), column: 0, header: false, loop: true } })
// 40 quiet readings, one spike, repeated
await writeFile(join(root, 'temps.csv'), [...temperatures(20), ...temperatures(20), ...temperatures(20).slice(0, 8), 38].join('\n'))

const shelf = new ZipShelf()
const bundles = new UnpackedBundles({ dataDir: root, fleetKey: fleet.publicKey, zips: shelf })
const add = async (zip: { out: string }): Promise<string> => await shelf.add(zip.out)

/** A runtime on the shared bundles and sensor; `on` gives it another database and data dir (and worker count). */
function runtime (on: { db: Database, dataDir: string, workers: number } = { db, dataDir: root, workers: 2 }): Runtime {
  return new Runtime({
    node: 'self',
    sensors: new Map([['temp1', sensor]]),
    outbox: { enqueue: async (job: EnqueueInput) => { queued.push(job); return job } },
    logger: pino({ level: 'silent' }),
    fleetKey: fleet.publicKey,
    bundles,
    db: on.db,
    registry: { set: async (k: string, v: unknown) => { registry.set(k, v); return {} as any } }
  }, { dataDir: on.dataDir, workers: on.workers, maxBatchSize: 8, maxBatchDelayMs: 2 })
}

const bundle = await add(await anomalyBundleZip(fleet.privateKey, {
  under: root,
  config: { rules: [{ name: 'alarm', when: 'class == "anomaly" && score > 0.8', actions: [{ type: 'log', message: '{{model}}: {{class}} {{score}}' }] }] }
}))

t.test('run a signed bundle, predict, rules, stop', async t => {
  const rt = runtime()
  await rt.start()
  t.equal(rt.backend, 'wasm', 'wasm is the backend before anything runs')
  const instance = await rt.run({ bundle })
  t.equal(instance.state, 'running')
  t.equal(instance.backend, 'wasm')
  t.equal(rt.backendInUse, true)
  t.match(registry.get('instance/self/anomaly'), { state: 'running', model: 'anomaly', version: '1.0.0', backend: 'wasm' })
  t.same(instance.status().model_version_status[0], { version: '1.0.0', state: 'AVAILABLE', status: { error_code: 'OK', error_message: '' } })

  const body = { instances: [scaled(temperatures(20)), scaled(temperatures(22, 15)), scaled(temperatures(18))] }
  const rows = await instance.predict(parsePredictBody(body, instance.bundle.manifest.inputs).instances)
  const cls = rows.map(r => (r[0] as number[])[1]! > 0.5 ? 'anomaly' : 'normal')
  t.same(cls, ['normal', 'anomaly', 'normal'], 'the trained model tells a spike from a quiet window')
  t.equal(queued.length, 1, 'the rule fired once, for the anomaly')
  t.match(queued[0], { type: 'log', rule: 'alarm', instance: 'anomaly', action: { message: /^anomaly: anomaly (1|0\.\d+)$/ }, event: { source: 'api', class: 'anomaly' } })

  // concurrent requests share batches
  const before = instance.describe().batches as { batches: number, items: number }
  await Promise.all(Array.from({ length: 64 }, async () => await instance.predict(parsePredictBody({ instances: [scaled(temperatures(20))] }, instance.bundle.manifest.inputs).instances)))
  const after = instance.describe().batches as { batches: number, items: number }
  t.equal(after.items - before.items, 64)
  t.ok(after.batches - before.batches < 64, `64 concurrent requests ran in ${after.batches - before.batches} batches`)

  await t.rejects(rt.run({ bundle }), { code: 'ERR_INSTANCE_EXISTS' })
  await rt.stopInstance('anomaly')
  t.equal(rt.has('anomaly'), false)
  t.match(registry.get('instance/self/anomaly'), { state: 'stopped' })
  await t.rejects(async () => { rt.get('anomaly') }, { code: 'ERR_NOT_FOUND' })
  await rt.stop()
})

t.test('sensor windows drive the model; instances come back after a restart', async t => {
  queued.length = 0
  await sensor.open()
  t.teardown(async () => { await sensor.close() })
  const rt = runtime()
  await rt.start()
  await rt.run({ bundle, spec: { name: 'watch', input: { sensors: ['temp1'], window: { size: 16 }, preprocess: [{ op: 'scale', ...SCALE }] } } })
  await waitFor(() => queued.length >= 2, 'two spikes to fire the rule', 10_000, 20)
  t.match(queued[0], { instance: 'watch', event: { source: 'sensor', sensor: 'temp1', window: { max: 38, size: 16 }, class: 'anomaly' } }, 'the window that fired holds the spike')
  await rt.stop()
  t.equal(registry.get('instance/self/watch') != null, true)

  const again = runtime()
  await again.start()
  await again.restored()
  t.equal(again.has('watch'), true, 'restored from level')
  await again.stopInstance('watch')
  await again.stop()
  const third = runtime()
  await third.start()
  await third.restored()
  t.equal(third.has('watch'), false, 'a stopped instance stays stopped')
  await third.stop()
})

t.test('an instance stopped while the disk is full stops, sensor pipeline and all', async t => {
  // found by the chaos suite: its record was deleted first, the refused write threw, and the
  // instance ran on out of sight, its rules firing beside the one the reconciler started in its place
  queued.length = 0
  await sensor.open()
  t.teardown(async () => { await sensor.close() })
  const dir = await mkdtemp(join(root, 'full-'))
  const guard = new DiskGuard({ dataDir: dir, freeBytes: async () => 0 })
  const guarded = await openDatabase(dir, { guard })
  t.teardown(async () => { await guarded.close(); guard.close() })
  const rt = runtime({ db: guarded, dataDir: dir, workers: 1 })
  await rt.start()
  const deployed = await rt.run({ bundle, spec: { name: 'placed', input: { sensors: ['temp1'], window: { size: 16 }, preprocess: [{ op: 'scale', ...SCALE }] } }, deployment: 'd1' }, { persist: false })
  const manual = await rt.run({ bundle, spec: { name: 'manual', input: { sensors: ['temp1'], window: { size: 16 }, preprocess: [{ op: 'scale', ...SCALE }] } } })
  await waitFor(() => queued.some(j => j.instance === 'placed') && queued.some(j => j.instance === 'manual'), 'both instances to fire on a spike', 10_000, 20)
  guard.report(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }), join(dir, 'db'))
  t.equal(guard.full, true, 'the disk is full')

  await rt.stopInstance('placed')
  t.equal(deployed.state, 'stopped', 'a deployment instance (never recorded) stops: nothing to write')
  await t.rejects(rt.stopInstance('manual'), { code: 'ERR_DISK_FULL' }, 'an instance started through the API: forgetting its record is refused')
  t.equal(manual.state, 'stopped', 'but it is stopped all the same')
  t.same(rt.list(), [], 'and neither is listed')
  const fired = queued.length
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.equal(queued.length, fired, 'no rule fires after the stop: no pipeline left reading the sensor')
  await rt.stop()
})

t.test('nothing unsigned, altered or misdeclared runs', async t => {
  const rt = runtime()
  await rt.start()
  t.teardown(async () => { await rt.stop() })
  const other = generateKeyPairSync('ed25519')
  const foreign = await add(await anomalyBundleZip(other.privateKey, { name: 'foreign', under: root }))
  await t.rejects(rt.run({ bundle: foreign }), { code: 'ERR_BUNDLE_INVALID' }, 'a zip signed by another key is not even unpacked')
  t.equal(await stat(bundles.dirOf(foreign)).catch((e: { code: string }) => e.code), 'ENOENT', 'nothing left on disk')

  // files changed on disk after unpacking
  const altered = await add(await anomalyBundleZip(fleet.privateKey, { name: 'altered', under: root }))
  await bundles.get(altered)
  const shard = join(bundles.dirOf(altered), 'model', 'group1-shard1of1.bin')
  const weights = await readFile(shard)
  weights[10] = (weights[10]! + 1) % 256
  await writeFile(shard, weights)
  await t.rejects(rt.run({ bundle: altered }), { code: 'ERR_BUNDLE_INVALID', field: /manifest\.files\[\d\]/ }, 'weights changed after unpacking')
  const edited = await add(await anomalyBundleZip(fleet.privateKey, { name: 'edited', under: root }))
  await bundles.get(edited)
  const manifestPath = join(bundles.dirOf(edited), 'manifest.json')
  await writeFile(manifestPath, (await readFile(manifestPath, 'utf8')).replace('"1.0.0"', '"1.0.1"'))
  await t.rejects(rt.run({ bundle: edited }), { code: 'ERR_BUNDLE_INVALID', field: 'manifest.jws' }, 'manifest changed after signing')
  await rm(join(bundles.dirOf(edited), 'manifest.jws'))
  await t.rejects(rt.run({ bundle: edited }), { code: 'ERR_BUNDLE_INVALID', field: 'manifest.jws' }, 'no signature')
  await t.rejects(rt.run({ bundle: 'f'.repeat(64) }), { code: 'ERR_BUNDLE_NOT_FOUND' }, 'a bundle this node does not hold')
  await t.rejects(rt.run({ bundle, spec: { input: { sensors: ['nope'], window: { size: 16 } } } }), { code: 'ERR_INSTANCE_SPEC', field: 'spec.input.sensors' })
  await t.rejects(rt.run({ bundle, spec: { rules: [{ name: 'r', when: 'x(', actions: [{ type: 'log', message: 'm' }] }] } }), { code: 'ERR_INSTANCE_SPEC', field: 'spec.rules[0].when' })
  await t.rejects(rt.run({ bundle, spec: { rules: [{ name: 'r', when: 'x', actions: [{ type: 'sms', to: 'abc', body: 'b' }] }] } }), { code: 'ERR_INSTANCE_SPEC', field: 'spec.rules[0].actions[0].to' })
  await t.rejects(rt.run({ bundle, spec: { rules: [{ name: 'r', when: 'x', actions: [{ type: 'script' }] }] } }), { code: 'ERR_INSTANCE_SPEC', field: 'spec.rules' }, 'a script action without a script')
  t.equal(rt.list().length, 0)
})
