/**
 * `npm run bench -- inference [--requests N] [--concurrency C] [--rate HZ] [--seconds S] [--format-requests N]`
 *
 * Formats: the fixtures' conv net (28×28×1 → conv8 → pool → dense10) in
 * every format and backend — TF.js (its twin from weights.json) on wasm,
 * ONNX on the native binding and on wasm, TFLite (dynamic and fixed batch)
 * on LiteRT — each in process at batch 1 and 8, p50 and p99 per predict:
 * the runtime alone (its ModelRunner in this thread: `runtime*`) and the
 * whole instance (ModelInstance.predict: body check, batcher, worker thread
 * and back: `batch*`); then, on an agent process, the same models over
 * HTTP (REST predict) and gRPC (TF Serving's Predict) at batch 1, as
 * overhead at p50 over the instance in process: per request, the client's
 * latency minus the agent's own in-process time for that request (its
 * `Server-Timing: predict;dur=…`, from the decoded body to the outputs),
 * so the figure is what the transport adds, not the difference between
 * two processes' runs of the model. Targets: ONNX native ≥ 5×
 * faster than TF.js wasm at batch 1 (the runtimes); HTTP and gRPC each add
 * ≤ 0.5 ms at p50.
 *
 * Then a small dense model (the anomaly model) and a small conv net (28×28×1 →
 * conv8 → pool → conv16 → pool → dense10), each measured:
 *  - in process: ModelInstance.predict, one request at a time (p50), then C at once (rps);
 *  - over HTTP: POST /v1/models/NAME:predict on a separate agent process, one
 *    at a time (p50, and what HTTP added to the agent's Server-Timing) and C at once (p99, rps);
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
import { freePort } from '../helpers/ports.ts'
import { ANOMALY_MODEL_DIR, LABELS, WINDOW } from '../helpers/anomaly-bundle.ts'
import { Cluster, sleep } from '../helpers/cluster.ts'
import { copyFile, mkdir } from 'node:fs/promises'
import { agentGrpc, floatTensor, servedMsOf, servingClient } from '../helpers/grpc.ts'
import { fixture, REFERENCE, saveTfjsTwin } from '../helpers/model-fixtures.ts'
import { openModel } from '../../packaging/models/runner.ts'
import { startTransportFloor } from './transport-floor.ts'
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

/**
 * One HTTP POST over a keep-alive agent; resolves with the latency in ms.
 * With `timing`, the agent's in-process time for the request (its
 * Server-Timing header) goes to `timing.served` and the rest of the
 * latency, what HTTP added, to `timing.added`.
 */
function post (agent: HttpAgent, port: number, path: string, body: string, timing?: Timing): Promise<number> {
  const start = performance.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest({ agent, host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, res => {
      res.resume()
      res.on('end', () => {
        const ms = performance.now() - start
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`))
        timing?.note(ms, servedMsOf(res.headers['server-timing']))
        resolve(ms)
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Per request: the server's in-process time and what the transport added on top of it. */
class Timing {
  readonly served: number[] = []
  readonly added: number[] = []
  note (ms: number, servedMs: number | undefined): void {
    if (servedMs == null) throw new Error('the agent sent no Server-Timing for a predict it answered itself')
    this.served.push(servedMs)
    this.added.push(ms - servedMs)
  }

  reset (): void {
    this.served.length = 0
    this.added.length = 0
  }
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

interface FormatCase { key: string, name: string, file?: string, onnxBackend?: 'native' | 'wasm' }

/** The conv net in every format and backend. */
const FORMAT_CASES: FormatCase[] = [
  { key: 'tfjs-layers/wasm', name: 'conv-tfjs' },
  { key: 'onnx/onnx-native', name: 'conv-onnx', file: 'conv.onnx', onnxBackend: 'native' },
  { key: 'onnx/onnx-wasm', name: 'conv-onnx-wasm', file: 'conv.onnx', onnxBackend: 'wasm' },
  { key: 'tflite/litert-wasm', name: 'conv-tflite', file: 'conv-dyn.tflite' },
  { key: 'tflite-fixed-batch/litert-wasm', name: 'conv-tflite-b1', file: 'conv-b1.tflite' }
]

/**
 * In-process p50/p99 of each format at batch 1 and 8, then HTTP and gRPC
 * overhead at p50 against an agent process serving the same bundles.
 */
async function formats (root: string, key: KeyObject, pub: KeyObject, cluster: Cluster, requests: number): Promise<Record<string, unknown>> {
  const zips: Record<string, string> = {}
  const inputNames: Record<string, string> = {}
  for (const c of FORMAT_CASES) {
    const dir = join(root, 'formats', c.name)
    await mkdir(dir, { recursive: true })
    if (c.file == null) await saveTfjsTwin('conv', dir)
    else await copyFile(fixture(c.file), join(dir, c.file))
    const built = await buildBundle({ modelDir: dir, name: c.name, version: '1', signer: { key }, out: join(root, `${c.name}.zip`) })
    zips[c.name] = built.out
    inputNames[c.name] = built.manifest.inputs[0]!.name
  }
  const one = REFERENCE.conv.input.slice(0, 1)
  const eight = Array.from({ length: 8 }, (_, i) => REFERENCE.conv.input[i % REFERENCE.conv.input.length])
  const results: Record<string, Record<string, number | string>> = {}

  // the runtimes alone, in this thread: what each format costs before gatemesh adds anything
  const tensorOf = (rows: unknown[]): { dtype: 'float32', shape: number[], data: Float32Array } => ({ dtype: 'float32', shape: [rows.length, 28, 28, 1], data: Float32Array.from((rows as unknown[]).flat(3) as number[]) })
  for (const c of FORMAT_CASES) {
    const dir = join(root, 'formats', c.name)
    const file = c.file ?? 'model.json'
    const runner = await openModel({ format: c.file == null ? 'tfjs-layers' : c.file.endsWith('.onnx') ? 'onnx' : 'tflite', path: join(dir, file), onnxBackend: c.onnxBackend ?? 'auto', maxBatch: 8 })
    const timed = (rows: unknown[]) => async (): Promise<number> => {
      const input = tensorOf(rows)
      const start = performance.now()
      await runner.run([input])
      return performance.now() - start
    }
    await load(100, 1, timed(one))
    const b1 = await load(requests, 1, timed(one))
    await load(20, 1, timed(eight))
    const b8 = await load(Math.max(50, Math.floor(requests / 4)), 1, timed(eight))
    results[c.key] = {
      model: c.name,
      backend: runner.backend,
      runtimeBatch1P50Ms: round(percentile(b1.latencies, 50)),
      runtimeBatch1P99Ms: round(percentile(b1.latencies, 99)),
      runtimeBatch8P50Ms: round(percentile(b8.latencies, 50)),
      runtimeBatch8P99Ms: round(percentile(b8.latencies, 99))
    }
    await runner.dispose()
  }

  const db = new Level<string, unknown>(join(root, 'formats-db'), { valueEncoding: 'json' }) as Database
  await db.open()
  const shelf = new ZipShelf()
  const store = new UnpackedBundles({ dataDir: join(root, 'formats-data'), fleetKey: pub, zips: shelf })
  for (const c of FORMAT_CASES) {
    const local = new Runtime({ node: 'bench', sensors: new Map(), outbox: { enqueue: async () => ({}) }, logger: pino({ level: 'silent' }), fleetKey: pub, bundles: store, db, registry: { set: async () => ({}) as any } }, { dataDir: join(root, 'formats-data'), workers: 1, maxBatchSize: 8, maxBatchDelayMs: 0, onnxBackend: c.onnxBackend ?? 'auto' })
    await local.start()
    const instance = await local.run({ bundle: await shelf.add(zips[c.name]!) }, { persist: false })
    const specs = instance.bundle.manifest.inputs
    const timed = (rows: unknown[]) => async (): Promise<number> => {
      const start = performance.now()
      await instance.predict(parsePredictBody({ instances: rows }, specs).instances)
      return performance.now() - start
    }
    await load(100, 1, timed(one))
    const b1 = await load(requests, 1, timed(one))
    await load(20, 1, timed(eight))
    const b8 = await load(Math.max(50, Math.floor(requests / 4)), 1, timed(eight))
    results[c.key] = {
      ...results[c.key],
      batch1P50Ms: round(percentile(b1.latencies, 50)),
      batch1P99Ms: round(percentile(b1.latencies, 99)),
      batch8P50Ms: round(percentile(b8.latencies, 50)),
      batch8P99Ms: round(percentile(b8.latencies, 99))
    }
    await local.stop()
  }
  await db.close()

  // the same bundles on an agent process: REST and gRPC at batch 1
  const grpcPort = await freePort()
  const node = await cluster.addNode('formats', { config: { logs: { stdout: false, level: 'warn' }, runtime: { workers: 1, maxBatchSize: 8, maxBatchDelayMs: 0 }, grpc: { port: grpcPort } } })
  await cluster.start('formats')
  const address = await agentGrpc(node.dir)
  const client = await servingClient(address)
  const http = new HttpAgent({ keepAlive: true, maxSockets: 1 })
  const overheads: Record<string, number[]> = { http: [], grpc: [] }
  try {
    for (const c of FORMAT_CASES.filter(c => c.onnxBackend !== 'wasm')) {
      const up = await fetch(`${node.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('formats') }, body: await readFile(zips[c.name]!) })
      const { digest } = await up.json() as { digest: string }
      const ran = await fetch(`${node.api}/v1/instances`, { method: 'POST', headers: { 'content-type': 'application/json', ...await cluster.auth('formats') }, body: JSON.stringify({ bundle: digest }) })
      if (ran.status !== 201) throw new Error(`run ${c.name}: ${ran.status} ${await ran.text()}`)
      const body = JSON.stringify({ instances: one })
      const httpTiming = new Timing()
      const grpcTiming = new Timing()
      const viaHttp = async (): Promise<number> => await post(http, node.apiPort, `/v1/models/${c.name}:predict`, body, httpTiming)
      const request = { model_spec: { name: c.name }, inputs: { [inputNames[c.name]!]: floatTensor(one) } }
      const viaGrpc = async (): Promise<number> => {
        const start = performance.now()
        const { servedMs } = await client.predictTimed(request)
        const ms = performance.now() - start
        grpcTiming.note(ms, servedMs)
        return ms
      }
      await load(100, 1, viaHttp)
      await load(100, 1, viaGrpc)
      httpTiming.reset()
      grpcTiming.reset()
      const h = percentile((await load(requests, 1, viaHttp)).latencies, 50)
      const g = percentile((await load(requests, 1, viaGrpc)).latencies, 50)
      const r = results[c.key]!
      r.httpP50Ms = round(h)
      r.grpcP50Ms = round(g)
      // the agent's own in-process time for the same requests, and what each transport added to it
      r.agentInProcessP50Ms = round(percentile(httpTiming.served, 50))
      r.httpOverheadP50Ms = round(percentile(httpTiming.added, 50))
      r.grpcOverheadP50Ms = round(percentile(grpcTiming.added, 50))
      overheads.http!.push(percentile(httpTiming.added, 50))
      overheads.grpc!.push(percentile(grpcTiming.added, 50))
    }
  } finally {
    client.close()
    http.destroy()
  }
  const floor = await transportFloor(one, inputNames['conv-onnx']!, requests)
  const ratio = (field: string): number => round((results['tfjs-layers/wasm']![field] as number) / (results['onnx/onnx-native']![field] as number), 1)
  const speedup = ratio('runtimeBatch1P50Ms')
  const httpOverhead = round(Math.max(...overheads.http!))
  const grpcOverhead = round(Math.max(...overheads.grpc!))
  return {
    conv: results,
    targets: {
      onnxNativeVsTfjsWasmBatch1: speedup,
      onnxNativeAtLeast5x: speedup >= 5,
      // through the whole instance the fixed cost (body check, batcher, worker round trip) narrows the gap
      onnxNativeVsTfjsWasmBatch1Instance: ratio('batch1P50Ms'),
      httpOverheadP50Ms: httpOverhead,
      grpcOverheadP50Ms: grpcOverhead,
      overheadsWithinHalfMs: httpOverhead <= 0.5 && grpcOverhead <= 0.5
    },
    transportFloor: floor
  }
}

/**
 * The same bodies and clients against bare node:http and grpc-js servers in
 * another process (transport-floor.ts): what the transports cost on this
 * machine before any gatemesh code runs.
 */
async function transportFloor (one: unknown[], inputName: string, requests: number): Promise<Record<string, number>> {
  const floor = await startTransportFloor()
  const http = new HttpAgent({ keepAlive: true, maxSockets: 1 })
  const client = await servingClient(floor.grpcAddress)
  try {
    const body = JSON.stringify({ instances: one })
    const request = { model_spec: { name: 'floor' }, inputs: { [inputName]: floatTensor(one) } }
    const viaHttp = async (): Promise<number> => await post(http, floor.httpPort, '/v1/models/floor:predict', body)
    const viaGrpc = async (): Promise<number> => {
      const start = performance.now()
      await client.predict(request)
      return performance.now() - start
    }
    await load(100, 1, viaHttp)
    await load(100, 1, viaGrpc)
    return {
      httpP50Ms: round(percentile((await load(requests, 1, viaHttp)).latencies, 50)),
      grpcP50Ms: round(percentile((await load(requests, 1, viaGrpc)).latencies, 50))
    }
  } finally {
    client.close()
    http.destroy()
    await floor.process.stop()
  }
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
    const formatResults = await formats(root, fleet.privateKey, fleet.publicKey, cluster, Number(args['format-requests'] ?? 1000))
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
      const res = await fetch(`${node.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('bench') }, body: await readFile(zip) })
      return ((await res.json()) as { digest: string }).digest
    }
    const digests = { dense: await upload(zips.dense), conv: await upload(zips.conv) }
    for (const name of ['dense', 'conv'] as const) {
      const res = await fetch(`${node.api}/v1/instances`, { method: 'POST', headers: { 'content-type': 'application/json', ...await cluster.auth('bench') }, body: JSON.stringify({ bundle: digests[name] }) })
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
      const timing = new Timing()
      const http = async (): Promise<number> => await post(agent, node.apiPort, `/v1/models/${name}:predict`, body, timing)
      await load(200, 1, http)
      timing.reset()
      const seqHttp = await load(requests, 1, http)
      const added = percentile(timing.added, 50)
      const parHttp = await load(requests, concurrency, http)
      models[name] = {
        inProcessP50Ms: round(percentile(seqLocal.latencies, 50)),
        inProcessRps: Math.round(parLocal.rps),
        httpP50Ms: round(percentile(seqHttp.latencies, 50)),
        httpOverheadP50Ms: round(added),
        httpP99Ms: round(percentile(parHttp.latencies, 99)),
        httpLoadedP50Ms: round(percentile(parHttp.latencies, 50)),
        httpRps: Math.round(parHttp.rps)
      }
      await local.stopInstance(instance.name)
    }
    agent.destroy()
    await local.stop()
    await db.close()
    for (const name of ['dense', 'conv']) await fetch(`${node.api}/v1/instances/${name}`, { method: 'DELETE', headers: await cluster.auth('bench') })

    // sensor → window → dense model → rule → outbox → http.post, at `rate` readings/s
    const watch = await fetch(`${node.api}/v1/instances`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...await cluster.auth('bench') },
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
      models,
      formats: formatResults
    }
  } finally {
    receiver.close()
    await cluster.close()
    await rm(root, { recursive: true, force: true })
  }
}
