import { generateKeyPairSync } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import t from 'tap'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { UnpackedBundles } from '../../node/runtime/bundle-store.ts'
import { ZipShelf } from '../helpers/zips.ts'
import { Runtime } from '../../node/runtime/runtime.ts'
import { parsePredictBody } from '../../node/runtime/tensors.ts'
import { saveGraphModelFrom, saveLayersModel } from '../helpers/models.ts'
import type { Database } from '../../node/store/db.ts'

// a layers model and a graph model with the same weights must predict the same numbers in the workers
const root = await mkdtemp(join(tmpdir(), 'gatemesh-graph-'))
const fleet = generateKeyPairSync('ed25519')
const db = new Level<string, unknown>(join(root, 'db'), { valueEncoding: 'json' }) as Database
await db.open()
const shelf = new ZipShelf()
const bundles = new UnpackedBundles({ dataDir: root, fleetKey: fleet.publicKey, zips: shelf })
const runtime = new Runtime({ node: 'self', sensors: new Map(), outbox: { enqueue: async () => ({}) }, logger: pino({ level: 'silent' }), fleetKey: fleet.publicKey, bundles, db, registry: { set: async () => ({}) as any } }, { dataDir: root, workers: 2 })
await runtime.start()
t.teardown(async () => {
  await runtime.stop()
  await db.close()
  await rm(root, { recursive: true, force: true })
})

t.test('layers and graph formats load and agree', async t => {
  const layers = await saveLayersModel(join(root, 'layers'))
  await saveGraphModelFrom(layers, join(root, 'graph'))
  const results: number[][][] = []
  for (const format of ['layers', 'graph']) {
    const built = await buildBundle({ modelDir: join(root, format), name: `m-${format}`, version: '1', signer: { key: fleet.privateKey }, out: join(root, `${format}.zip`) })
    t.equal(built.manifest.model.format, `tfjs-${format}`)
    const digest = await shelf.add(built.out)
    const instance = await runtime.run({ bundle: digest })
    t.equal(instance.state, 'running', `${format} model running`)
    const body = { instances: [[0.1, 0.2, 0.3, 0.4], [1, -1, 0.5, 2]] }
    const rows = await instance.predict(parsePredictBody(body, instance.bundle.manifest.inputs).instances)
    results.push(rows.map(r => r[0] as number[]))
  }
  const [a, b] = results
  t.equal(a!.length, 2)
  a!.forEach((row, i) => { row.forEach((v, k) => { t.ok(Math.abs(v - b![i]![k]!) < 1e-5, `row ${i} class ${k}: ${v.toFixed(6)} ≈ ${b![i]![k]!.toFixed(6)}`) }) })
})
