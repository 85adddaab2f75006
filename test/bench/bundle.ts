/**
 * Bundle distribution benchmark:
 *
 *   npm run bench -- bundle [--size-mb 64] [--peers 8] [--runs 3]
 *   npm run bench -- bundle --size-mb 64 --peers 8 --link-mbit 20   (capped links: bundle-links.ts)
 *
 * Builds a real TF.js layers model of about `size-mb` (one dense layer),
 * bundles it, then measures on 127.0.0.1, every agent a separate process:
 *  - rawTcpMBps: plain TCP loopback between two processes, same run;
 *  - singlePeerMBps: one agent pulling from one provider over the mesh
 *    (TCP + pnet + Noise + Yamux), chunk hashing and the final full
 *    verification included (median of `runs`);
 *  - fanoutSeconds: `peers` agents pulling at once, allowed to fetch from each other;
 *  - singleSourceFanoutSeconds: the same when only the original source serves.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { loadTf } from '../../packaging/tfjs/backend.ts'
import { fileSaveHandler } from '../../packaging/tfjs/file-io.ts'
import { Cluster, waitFor } from '../helpers/cluster.ts'
import { start } from '../helpers/processes.ts'
import type { BenchArgs } from './run.ts'

const MB = 1024 * 1024

async function makeModel (dir: string, sizeMb: number): Promise<void> {
  const { tf } = await loadTf()
  const units = Math.floor(Math.sqrt(sizeMb * MB / 4))
  const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [units], units, name: 'wide' })] })
  await model.save(fileSaveHandler(tf, dir))
  model.dispose()
}

/** Bytes from a child process to this one over loopback TCP, nothing else. */
async function rawTcp (bytes: number): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const result = new Promise<number>((resolve, reject) => {
    server.once('connection', socket => {
      let got = 0
      let start = 0
      socket.on('data', d => {
        if (start === 0) start = performance.now()
        got += d.byteLength
      })
      socket.on('end', () => { resolve(got / MB / ((performance.now() - start) / 1000)) })
      socket.on('error', reject)
    })
  })
  const sender = `const s=require('net').connect(${port},'127.0.0.1');const b=Buffer.alloc(${MB},7);let left=${bytes};` +
    'function go(){while(left>0){left-=b.length;if(!s.write(b)){s.once("drain",go);return}}s.end()};s.on("connect",go)'
  const child = start(process.execPath, ['-e', sender], { name: 'raw TCP sender' })
  const mbps = await result
  child.kill()
  server.close()
  return mbps
}

async function pull (cluster: Cluster, name: string, digest: string): Promise<void> {
  const res = await fetch(`${cluster.node(name).api}/v1/bundles/${digest}/pull?wait=true`, { method: 'POST', headers: await cluster.auth(name), signal: AbortSignal.timeout(600_000) })
  if (res.status !== 200) throw new Error(`pull on ${name}: ${res.status} ${await res.text()}`)
}

async function publish (cluster: Cluster, name: string, zip: string): Promise<void> {
  const res = await fetch(`${cluster.node(name).api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth(name) }, body: await readFile(zip) })
  if (res.status !== 201) throw new Error(`publish: ${res.status} ${await res.text()}`)
}

/** A seed holding the bundle and `pullers` agents that see its advert. */
async function mesh (fleetDir: string, zip: string, digest: string, pullers: number, share: boolean): Promise<{ cluster: Cluster, names: string[] }> {
  // agents from sources, as this benchmark's published figures were measured
  const cluster = await Cluster.create({ sources: true })
  const config = { logs: { stdout: false, level: 'warn' }, bundles: { share } }
  await cluster.addNode('seed', { role: 'server', fleetDir, config: { logs: { stdout: false, level: 'warn' } } })
  const names = Array.from({ length: pullers }, (_, i) => `p${i + 1}`)
  for (const n of names) await cluster.addNode(n, { fleetDir, config })
  await cluster.start('seed')
  await Promise.all(names.map(async n => await cluster.start(n)))
  await publish(cluster, 'seed', zip)
  await Promise.all(names.map(async n => {
    await waitFor(async () => (await cluster.get(n, `/v1/registry?prefix=bundle/${digest}/`)).count > 0, `${n} to see the advert`, 30_000)
  }))
  return { cluster, names }
}

async function fanout (fleetDir: string, zip: string, digest: string, pullers: number, share: boolean): Promise<number> {
  const { cluster, names } = await mesh(fleetDir, zip, digest, pullers, share)
  try {
    const start = performance.now()
    await Promise.all(names.map(async n => { await pull(cluster, n, digest) }))
    return (performance.now() - start) / 1000
  } finally {
    await cluster.close()
  }
}

/** A signed bundle of about `sizeMb` in `root`, with the fleet that signed it. */
export async function benchBundle (root: string, sizeMb: number): Promise<{ fleetDir: string, zip: string, digest: string, size: number }> {
  const fleetDir = join(root, 'fleet')
  await initFleet(fleetDir)
  const fleet = await loadFleet(fleetDir)
  await makeModel(join(root, 'model'), sizeMb)
  const built = await buildBundle({ modelDir: join(root, 'model'), name: 'bench', version: '1', signer: { key: fleet.privateKey }, out: join(root, 'bench.zip') })
  console.log(`bundle ${built.digest}: ${(built.size / MB).toFixed(1)} MiB in ${built.index.hashes.length} chunks`)
  return { fleetDir, zip: built.out, digest: built.digest, size: built.size }
}

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  if (args['link-mbit'] != null) return await (await import('./bundle-links.ts')).runOverLinks(args)
  const sizeMb = Number(args['size-mb'] ?? 64)
  const peers = Number(args.peers ?? 8)
  const runs = Number(args.runs ?? 3)
  const root = await mkdtemp(join(tmpdir(), 'gatemesh-bench-bundle-'))
  try {
    const { fleetDir, zip, digest, size: sizeBytes } = await benchBundle(root, sizeMb)
    const built = { out: zip, digest }

    const rawTcpMBps = await rawTcp(Math.max(256, sizeMb * 4) * MB)
    console.log(`raw TCP loopback: ${rawTcpMBps.toFixed(0)} MB/s`)

    // single peer: one provider, `runs` fresh pullers one after another
    // pullers do not share, so each pull has exactly one provider
    const single = await mesh(fleetDir, built.out, built.digest, runs, false)
    const rates: number[] = []
    try {
      for (const n of single.names) {
        const start = performance.now()
        await pull(single.cluster, n, built.digest)
        const secs = (performance.now() - start) / 1000
        rates.push(sizeBytes / MB / secs)
        console.log(`single-peer pull ${n}: ${secs.toFixed(2)} s, ${(sizeBytes / MB / secs).toFixed(0)} MB/s`)
      }
    } finally {
      await single.cluster.close()
    }
    rates.sort((a, b) => a - b)
    const singlePeerMBps = rates[Math.floor(rates.length / 2)]!

    const fanoutSeconds = await fanout(fleetDir, built.out, built.digest, peers, true)
    console.log(`fan-out to ${peers}, peers share: ${fanoutSeconds.toFixed(2)} s`)
    const singleSourceFanoutSeconds = await fanout(fleetDir, built.out, built.digest, peers, false)
    console.log(`fan-out to ${peers}, one source: ${singleSourceFanoutSeconds.toFixed(2)} s`)
    const round = (n: number, d = 1): number => Math.round(n * 10 ** d) / 10 ** d
    return { scenario: 'bundle', sizeMb, peers, singlePeerMBps: round(singlePeerMBps), rawTcpMBps: round(rawTcpMBps), fanoutSeconds: round(fanoutSeconds, 2), singleSourceFanoutSeconds: round(singleSourceFanoutSeconds, 2) }
  } finally {
    await rm(root, { recursive: true, force: true })
  }
}
