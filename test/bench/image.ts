/**
 * Image benchmark: size of the x64 and arm64 images, and the resident
 * memory of an image's agent (x64, its own Node, the unit's command line)
 * after it joined a 3-node mesh, idle and with one model instance running.
 *   npm run bench -- image [--settle-sec 10]
 */
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { freePort } from '../helpers/ports.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { buildImageCli, rssBytes, startImageAgent, unpackImage } from '../helpers/image.ts'
import { deploy, publishAnomalyBundle, runningOn } from '../helpers/scheduling.ts'
import { inspectImage } from '../../packaging/image/flash.ts'
import type { BenchArgs } from './run.ts'

const MB = 1024 * 1024
const round = (n: number): number => Math.round(n * 10) / 10

async function sampleRss (pid: number, samples = 10): Promise<number> {
  const values: number[] = []
  for (let i = 0; i < samples; i++) {
    values.push(await rssBytes(pid))
    await sleep(500)
  }
  values.sort((a, b) => a - b)
  return values[Math.floor(values.length / 2)]!
}

export async function run (args: BenchArgs): Promise<Record<string, unknown>> {
  const settleMs = Number(args['settle-sec'] ?? 10) * 1000
  // the mesh peers from sources, as this benchmark's published figures were measured (the image's agent runs the image)
  const cluster = await Cluster.create({ sources: true })
  try {
    await cluster.addNode('a', { role: 'server' })
    await cluster.addNode('b')
    await Promise.all(['a', 'b'].map(async n => await cluster.start(n)))
    const p2p = await freePort()
    const api = await freePort()
    const overrides = join(cluster.root, 'config.json')
    await writeFile(overrides, JSON.stringify({ listen: [`/ip4/127.0.0.1/tcp/${p2p}`], api: { host: '127.0.0.1', port: api }, logs: { stdout: false } }))
    const sizes: Record<string, unknown> = {}
    for (const arch of ['x64', 'arm64']) {
      const out = join(cluster.root, `${arch}.tar.gz`)
      await buildImageCli(['--arch', arch, '--fleet', cluster.fleetDir, '--out', out, '--bootstrap', cluster.node('a').multiaddr, '--config', overrides])
      const { manifest } = await inspectImage(out)
      sizes[arch] = { archiveMB: round((await stat(out)).size / MB), unpackedMB: round(manifest.unpackedBytes / MB), nodeMB: round(manifest.node.bytes / MB), appMB: round(manifest.app.bytes / MB), modulesMB: round(manifest.modules.bytes / MB) }
    }
    const root = join(cluster.root, 'device')
    await unpackImage(join(cluster.root, 'x64.tar.gz'), root)
    const agent = await startImageAgent(root, { log: join(cluster.root, 'device.log') })
    const child = agent.child
    const peerId = JSON.parse(await readFile(join(root, 'opt/gatemesh/image.json'), 'utf8')).identity.peerId as string
    cluster.nodes.set('device', { name: 'device', dir: join(root, 'var/lib/gatemesh'), peerId, p2pPort: p2p, apiPort: api, multiaddr: '', api: `http://127.0.0.1:${api}`, child, process: agent })
    await waitFor(async () => (await cluster.members('a')).get(peerId)?.state === 'alive', 'the image agent to join', 60_000)
    await sleep(settleMs)
    const idle = await sampleRss(child.pid!)
    await publishAnomalyBundle(cluster, 'a')
    await deploy(cluster, 'a', { id: 'bench', model: { name: 'anomaly', version: '1.0.0' }, placement: { policy: 'pinned', nodes: [peerId] }, instance: { name: 'bench' } })
    await waitFor(async () => (await runningOn(cluster, 'a', 'bench')).join() === 'device', 'the instance to run', 90_000)
    await sleep(settleMs)
    const withModel = await sampleRss(child.pid!)
    return { scenario: 'image', sizes, rssAfterJoinMB: round(idle / MB), rssWithOneModelMB: round(withModel / MB) }
  } finally {
    await cluster.close()
  }
}
