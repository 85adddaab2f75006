/**
 * `npm run bench -- inference [--requests N] [--concurrency C] [--rate HZ] [--seconds S]`
 *
 * A small dense model (the anomaly model) and a small conv net (28×28×1 →
 * conv8 → pool → conv16 → pool → dense10), each measured:
 *  - in process: ModelInstance.predict, one request at a time (p50), then C at once (rps);
 *  - over HTTP: POST /v1/models/NAME:predict on a separate agent process, one
 *    at a time (p50) and C at once (p99, rps);
 * and sensor → action latency: a simulated sensor at RATE readings/s feeds
 * the dense model on that agent, a rule fires on every prediction and its
 * http.post action reaches a local receiver, which measures reading → arrival.
 */
import { createServer, Agent as HttpAgent, request as httpRequest } from 'node:http'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { pino } from 'pino'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { fileSaveHandler } from '../../packaging/tfjs/file-io.ts'
import { loadFleet } from '../../node/identity/fleet.ts'
import { loadBackend } from '../../node/runtime/backend.ts'
import { UnpackedBundles } from '../../node/runtime/bundle-store.ts'
import { ZipShelf } from '../helpers/zips.ts'
import { Runtime } from '../../node/runtime/runtime.ts'
import { parsePredictBody } from '../../node/runtime/tensors.ts'
import { freePort } from '../../node/cli/ports.ts'
import { ANOMALY_MODEL_DIR, LABELS, WINDOW } from '../helpers/anomaly-bundle.ts'
import { Cluster, sleep } from '../helpers/cluster.ts'
import type { BenchArgs } from './run.ts'
import type { Database } from '../../node/store/db.ts'
import type { KeyObject } from 'node:crypto'

const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] ?? NaN
}
const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d

async function convModelDir (dir: string): Promise<void> {
  const { tf } = await loadBackend('auto')
  const m = tf.sequential()
  m.add(tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 8, kernelSize: 3, activation: 'relu' }))
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }))
  m.add(tf.layers.conv2d({ filters: 16, kernelSize: 3, activation: 'relu' }))
  m.add(tf.layers.maxPooling2d({ poolSize: 2 }))
  m.add(tf.layers.flatten())
  m.add(tf.layers.dense({ units: 10, activation: 'softmax' }))
  await m.save(fileSaveHandler(tf, dir))
}

async function bundles (root: string, key: KeyObject): Promise<{ dense: string, conv: string }> {
  const convDir = join(root, 'conv-model')
  await convModelDir(convDir)
  const dense = await buildBundle({
    modelDir: ANOMALY_MODEL_DIR, name: 'dense', version: '1', signer: { key }, out: join(root, 'dense.zip'), validate: false,
    inputs: [{ name: 'window', dtype: 'float32', shape: [-1, WINDOW] }], outputs: [{ name: 'class', dtype: 'float32', shape: [-1, 2], labels: LABELS }]
  })
  const conv = await buildBundle({ modelDir: convDir, name: 'conv', version: '1', signer: { key }, out: join(root, 'conv.zip') })
  return { dense: dense.out, conv: conv.out }
}

function inputFor (name: string): unknown[] {
  if (name === 'dense') return Array.from({ length: WINDOW }, (_, i) => 0.4 + 0.02 * Math.sin(i))
  return Array.from({ length: 28 }, (_, y) => Array.from({ length: 28 }, (_, x) => [((x * y) % 17) / 17]))
}

/** One HTTP POST over a keep-alive agent; resolves with the latency in ms. */
function post (agent: HttpAgent, port: number, path: string, body: string): Promise<number> {
  const start = performance.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest({ agent, host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, res => {
      res.resume()
      res.on('end', () => { res.statusCode === 200 ? resolve(performance.now() - start) : reject(new Error(`HTTP ${res.statusCode}`)) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function load (n: number, concurrency: number, one: () => Promise<number>): Promise<{ latencies: number[], rps: number }> {
  const latencies: number[] = []
  let next = 0
  const start = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next++ < n) latencies.push(await one())
  }))
  return { latencies, rps: n / ((performance.now() - start) / 1000) }
}

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const requests = Number(args.requests ?? 2000)
  const concurrency = Number(args.concurrency ?? 16)
  const rate = Number(args.rate ?? 200)
  const seconds = Number(args.seconds ?? 10)
  const root = await mkdtemp(join(tmpdir(), 'gatemesh-bench-inference-'))
  // agents from sources, as this benchmark's published figures were measured
  const cluster = await Cluster.create({ sources: true })
  const receiverPort = await freePort()
  const latencies: number[] = []
  const receiver = createServer((req, res) => {
    let text = ''
    req.on('data', c => { text += c })
    req.on('end', () => {
      latencies.push(Date.now() - (JSON.parse(text) as { ts: number }).ts)
      res.writeHead(201).end()
    })
  })
  await new Promise<void>(resolve => receiver.listen(receiverPort, '127.0.0.1', resolve))
  try {
    const fleet = await loadFleet(cluster.fleetDir)
    const zips = await bundles(root, fleet.privateKey)
    const runtimeConfig = { workers: 1, maxBatchSize: 8, maxBatchDelayMs: 0 }
    const node = await cluster.addNode('bench', {
      config: {
        logs: { stdout: false, level: 'warn' },
        runtime: runtimeConfig,
        outbox: { concurrency: 32 },
        sensors: [{ id: 'temp', type: 'simulated', unit: '°C', waveform: 'sine', offset: 20, amplitude: 2, periodMs: 10_000, noise: 0.1, rateHz: rate }]
      }
    })
    await cluster.start('bench')
    const upload = async (zip: string): Promise<string> => {
      const res = await fetch(`${node.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip' }, body: await readFile(zip) })
      return ((await res.json()) as { digest: string }).digest
    }
    const digests = { dense: await upload(zips.dense), conv: await upload(zips.conv) }
    for (const name of ['dense', 'conv'] as const) {
      const res = await fetch(`${node.api}/v1/instances`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ bundle: digests[name] }) })
      if (res.status !== 201) throw new Error(`run ${name}: ${res.status} ${await res.text()}`)
    }

    // the same runtime in this process, for the in-process baseline
    const db = new Level<string, unknown>(join(root, 'db'), { valueEncoding: 'json' }) as Database
    await db.open()
    const shelf = new ZipShelf()
    const store = new UnpackedBundles({ dataDir: root, fleetKey: fleet.publicKey, zips: shelf })
    const local = new Runtime({ node: 'bench', sensors: new Map(), outbox: { enqueue: async () => ({}) }, logger: pino({ level: 'silent' }), fleetKey: fleet.publicKey, bundles: store, db, registry: { set: async () => ({}) as any } }, { dataDir: root, ...runtimeConfig })
    await local.start()
    const models: Record<string, Record<string, number>> = {}
    let backend = ''
    const agent = new HttpAgent({ keepAlive: true, maxSockets: concurrency })
    for (const name of ['dense', 'conv'] as const) {
      const instance = await local.run({ bundle: await shelf.add(zips[name]) })
      backend = instance.backend ?? ''
      const specs = instance.bundle.manifest.inputs
      const body = JSON.stringify({ instances: [inputFor(name)] })
      const inProcess = async (): Promise<number> => {
        const start = performance.now()
        // what the HTTP route does short of HTTP: check the body, predict
        await instance.predict(parsePredictBody(JSON.parse(body), specs).instances)
        return performance.now() - start
      }
      await load(200, 1, inProcess)
      const seqLocal = await load(requests, 1, inProcess)
      const parLocal = await load(requests, concurrency, inProcess)
      const http = async (): Promise<number> => await post(agent, node.apiPort, `/v1/models/${name}:predict`, body)
      await load(200, 1, http)
      const seqHttp = await load(requests, 1, http)
      const parHttp = await load(requests, concurrency, http)
      models[name] = {
        inProcessP50Ms: round(percentile(seqLocal.latencies, 50)),
        inProcessRps: Math.round(parLocal.rps),
        httpP50Ms: round(percentile(seqHttp.latencies, 50)),
        httpOverheadP50Ms: round(percentile(seqHttp.latencies, 50) - percentile(seqLocal.latencies, 50)),
        httpP99Ms: round(percentile(parHttp.latencies, 99)),
        httpLoadedP50Ms: round(percentile(parHttp.latencies, 50)),
        httpRps: Math.round(parHttp.rps)
      }
      await local.stopInstance(instance.name)
    }
    agent.destroy()
    await local.stop()
    await db.close()
    for (const name of ['dense', 'conv']) await fetch(`${node.api}/v1/instances/${name}`, { method: 'DELETE' })

    // sensor → window → dense model → rule → outbox → http.post, at `rate` readings/s
    const watch = await fetch(`${node.api}/v1/instances`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        bundle: digests.dense,
        name: 'watch',
        spec: {
          input: { sensors: ['temp'], window: { size: WINDOW }, preprocess: [{ op: 'scale', min: 0, max: 50 }] },
          rules: [{ name: 'every', when: 'score >= 0', actions: [{ type: 'http.post', url: `http://127.0.0.1:${receiverPort}/hook`, body: '{"ts": {{ts}}}' }] }]
        }
      })
    })
    if (watch.status !== 201) throw new Error(`run watch: ${watch.status} ${await watch.text()}`)
    await sleep(2000)
    latencies.length = 0
    await sleep(seconds * 1000)
    const measured = [...latencies]
    const status = await (await fetch(`${node.api}/v1/status`)).json() as { members: Array<{ self: boolean, health?: { rssBytes: number } }> }
    const dense = models.dense!
    return {
      scenario: 'inference',
      backend,
      inProcessP50Ms: dense.inProcessP50Ms,
      httpP50Ms: dense.httpP50Ms,
      httpP99Ms: dense.httpP99Ms,
      httpRps: dense.httpRps,
      sensorToActionP99Ms: round(percentile(measured, 99), 1),
      sensorToActionP50Ms: round(percentile(measured, 50), 1),
      actionsPerSecond: Math.round(measured.length / seconds),
      readingsPerSecond: rate,
      concurrency,
      requests,
      agentRssMb: Math.round((status.members.find(m => m.self)?.health?.rssBytes ?? 0) / 1048576),
      models
    }
  } finally {
    receiver.close()
    await cluster.close()
    await rm(root, { recursive: true, force: true })
  }
}
