import { readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { freePort } from '../helpers/ports.ts'
import { Cluster, sleep, waitFor, type ClusterNode } from '../helpers/cluster.ts'
import { buildImageCli, currentRelease, elfMachine, filesUnder, imageDevice, rssBytes, startImageAgent, unpackImage } from '../helpers/image.ts'
import { deploy, publishAnomalyBundle, runningOn } from '../helpers/scheduling.ts'
import { temperatures, SCALE } from '../helpers/anomaly-bundle.ts'
import { exec } from '../helpers/processes.ts'

// a mesh of two agents from this repository, and a device that runs nothing but an x64 image
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
await cluster.addNode('a', { role: 'server' })
await cluster.addNode('b')
await Promise.all(['a', 'b'].map(async n => await cluster.start(n)))
await publishAnomalyBundle(cluster, 'a')

const p2pPort = await freePort()
const apiPort = await freePort()
const overrides = join(cluster.root, 'device-config.json')
await writeFile(overrides, JSON.stringify({ listen: [`/ip4/127.0.0.1/tcp/${p2pPort}`], api: { host: '127.0.0.1', port: apiPort }, logs: { stdout: false, level: 'debug' } }))
const archive = join(cluster.root, 'gatemesh-x64.tar.gz')
const root = join(cluster.root, 'device-root')

await t.test('gatemesh image build writes one archive and says what is in it', async t => {
  const { stdout } = await buildImageCli(['--arch', 'x64', '--fleet', cluster.fleetDir, '--out', archive, '--labels', 'site=device', '--bootstrap', cluster.node('a').multiaddr, '--config', overrides])
  t.match(stdout, /^\[1\/7\] node directory$/m, 'plain progress lines when stdout is not a terminal')
  t.match(stdout, /^\[7\/7\] archive$/m)
  t.match(stdout, /built the gatemesh \S+ image for x64/)
  t.match(stdout, /native: .*classic-level \(prebuilds\/linux-x64\/classic-level\.node\)/, 'the summary names the native modules')
  t.match(stdout, /native: .*epoll \(epoll\/build\/Release\/epoll\.node, compiled for the image\)/, 'and onoff\'s epoll, compiled from source for the image')
  t.match(stdout, /native: .*@gatemesh\/malloc-trim \(@gatemesh\/malloc-trim\/build\/Release\/malloc_trim\.node, compiled for the image\)/, 'and the agent\'s malloc_trim addon')
  t.notMatch(stdout, /left out/, 'nothing is left out: GPIO is in the image')
  t.equal((await stat(archive)).mode & 0o777, 0o600, 'the archive holds a private key: 0600')
})

let device: ClusterNode
await t.test('unpacked into an empty root, the image holds everything the agent needs', async t => {
  await unpackImage(archive, root)
  t.same((await readdir(root)).sort(), ['etc', 'opt', 'var'])
  const image = JSON.parse(await readFile(join(root, 'opt/gatemesh/image.json'), 'utf8'))
  const release = await currentRelease(root)
  t.equal(release.version, image.release.version, `releases/current is the image's release, ${release.version}`)
  t.equal(await readlink(join(root, 'opt/gatemesh/current')), 'releases/current', 'and /opt/gatemesh/current leads to it')
  t.equal(release.node, join(root, 'opt/gatemesh/releases/runtimes', image.node.version, 'bin/node'), 'the release runs on the image\'s runtime, shared under releases/runtimes')
  t.equal(await elfMachine(release.node), 0x3e, 'its own Node runtime, an x86-64 ELF')
  t.ok((await stat(join(root, 'opt/gatemesh/bin/gatemesh-loader'))).mode & 0o100, 'the loader is executable')
  const modules = join(release.dir, 'node_modules')
  const natives = await filesUnder(modules, '.node')
  t.ok(natives.length >= 2, `native modules: ${natives.map(f => f.split('node_modules/')[1]).join(', ')}`)
  for (const f of natives) t.equal(await elfMachine(f), 0x3e, `${f.split('node_modules/')[1]} is x86-64`)
  t.ok((await filesUnder(join(modules, '@tensorflow/tfjs-backend-wasm'), '.wasm')).length > 0, 'the wasm backend\'s .wasm files are there')
  t.ok(natives.some(f => f.endsWith('onnxruntime-node/bin/napi-v6/linux/x64/onnxruntime_binding.node')), 'ONNX Runtime\'s x64 binding is in, and no other platform\'s')
  t.same((await filesUnder(join(modules, 'onnxruntime-web'), '.wasm')).map(f => f.split('/').pop()), ['ort-wasm-simd-threaded.wasm'], 'onnxruntime-web keeps the one wasm build Node loads')
  t.same((await filesUnder(join(modules, '@litertjs/core'), '.wasm')).map(f => f.split('/').pop()).sort(), ['litert_wasm_compat_internal.wasm', 'litert_wasm_internal.wasm'], 'LiteRT.js keeps its two CPU builds')
  for (const r of image.modules.runtimes) console.error(`# x64 image: ${r.package} ${(r.bytesBefore / 1048576).toFixed(1)} MiB installed, ${(r.bytesAfter / 1048576).toFixed(1)} MiB in the image`)
  t.equal((await stat(join(root, 'var/lib/gatemesh/peer.key'))).mode & 0o777, 0o600, 'peer.key is 0600')
  t.equal((await stat(join(root, 'var/lib/gatemesh'))).mode & 0o777, 0o700, 'the data dir is 0700')
  const { stdout } = await exec(join(root, 'opt/gatemesh/bin/gatemesh'), ['--version'], { env: { PATH: '/usr/bin:/bin' } })
  t.match(stdout.trim(), /^\d+\.\d+\.\d+/, 'the CLI wrapper runs on the image\'s runtime')
  device = await imageDevice(root, p2pPort, apiPort)
  cluster.nodes.set('device', device)
})

await t.test('the unit\'s command line (the image\'s loader) runs the agent on the release\'s own Node; it joins the mesh', async t => {
  const release = await currentRelease(root)
  device.process = await startImageAgent(root, { log: join(cluster.root, 'device.log') })
  const child = device.child = device.process.child
  // the loader (a shell script) execs the agent: same process, now the release's node binary
  await waitFor(async () => child.exitCode == null && (await readlink(`/proc/${child.pid!}/exe`)) === release.node, 'the loader to exec the agent', 30_000)
  t.pass('the process runs the image\'s node binary, not the system\'s')
  await waitFor(async () => (await cluster.members('a')).get(device.peerId)?.state === 'alive', 'a to see the device alive', 60_000)
  const seen = await waitFor(async () => {
    const m = await cluster.members('device')
    return ['a', 'b'].every(n => m.get(cluster.node(n).peerId)?.state === 'alive') ? m : null
  }, 'the device to see a and b alive', 60_000)
  t.equal(seen.get(device.peerId)?.role, 'gateway')
  await waitFor(async () => (await cluster.members('b')).get(device.peerId)?.state === 'alive', 'b to see the device alive', 60_000)
  t.pass('b sees it too')
  const { record } = await (await fetch(`${device.api}/v1/release`, { signal: AbortSignal.timeout(10_000) })).json() as { record: { version: string, managed: boolean } }
  t.match(record, { version: release.version, managed: true }, 'it runs the image\'s release under the loader, which can switch it and roll back')
  // settle: connections, sync and the first heartbeats are done
  await sleep(5000)
  const rss = await rssBytes(child.pid!)
  t.ok(rss > 0, `agent RSS after joining: ${(rss / 1024 / 1024).toFixed(1)} MB`)
  console.error(`# image agent (x64) RSS after joining a 3-node mesh: ${(rss / 1024 / 1024).toFixed(1)} MB`)
})

await t.test('it accepts a placement: a pinned deployment runs on the device and answers', async t => {
  await deploy(cluster, 'a', {
    id: 'pin-device',
    model: { name: 'anomaly', version: '1.0.0' },
    placement: { policy: 'pinned', nodes: [device.peerId] },
    instance: { name: 'device-anomaly' }
  })
  await waitFor(async () => (await runningOn(cluster, 'a', 'pin-device')).join() === 'device', 'the instance to run on the device', 90_000, 250)
  t.same(await runningOn(cluster, 'b', 'pin-device'), ['device'], 'running on the device, as every node sees it')
  const window = temperatures(21).map(v => (v - SCALE.min) / (SCALE.max - SCALE.min))
  const res = await fetch(`${device.api}/v1/models/device-anomaly:predict`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances: [window] }), signal: AbortSignal.timeout(20_000)
  })
  t.equal(res.status, 200, 'inference inside the image (TF.js from the image\'s node_modules)')
  const body = await res.json() as { predictions: unknown[] }
  t.equal(body.predictions.length, 1, 'one prediction for one window')
  const rss = await rssBytes(device.child!.pid!)
  console.error(`# image agent (x64) RSS with one model instance running (TF.js wasm in a worker thread): ${(rss / 1024 / 1024).toFixed(1)} MB`)
})
