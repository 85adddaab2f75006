import { access, copyFile, mkdir, readFile, readlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { freePort } from '../helpers/ports.ts'
import { Cluster, waitFor, type ClusterNode } from '../helpers/cluster.ts'
import { buildImageCli, currentRelease, elfMachine, filesUnder, imageDevice, startImageAgent, unpackImage } from '../helpers/image.ts'
import { deploy, publishAnomalyBundle, runningOn } from '../helpers/scheduling.ts'
import { fixture, maxDiff, REFERENCE } from '../helpers/model-fixtures.ts'
import { loadFleet } from '../../node/identity/fleet.ts'
import { buildBundle } from '../../packaging/bundle/index.ts'
import { exec } from '../helpers/processes.ts'

const EM_AARCH64 = 0xb7
/** Debian's arm64 glibc, libstdc++ and libgcc (libc6-arm64-cross and friends), the sysroot qemu-user loads them from. */
const SYSROOT = '/usr/aarch64-linux-gnu'

// emulated arm64 runs ~10× slower than native: under a CPU hog, or beside another suite,
// the image build, join, placement and ONNX predict took 751 s of tap's default 900
t.setTimeout(1_800_000)

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
await cluster.addNode('a', { role: 'server' })
await cluster.addNode('b')
await Promise.all(['a', 'b'].map(async n => await cluster.start(n)))

const p2pPort = await freePort()
const apiPort = await freePort()
const overrides = join(cluster.root, 'device-config.json')
await writeFile(overrides, JSON.stringify({ listen: [`/ip4/127.0.0.1/tcp/${p2pPort}`], api: { host: '127.0.0.1', port: apiPort }, logs: { stdout: false } }))
const archive = join(cluster.root, 'gatemesh-arm64.tar.gz')
const root = join(cluster.root, 'device-root')

await t.test('an arm64 image carries only aarch64 binaries', async t => {
  const { stdout } = await buildImageCli(['--arch', 'arm64', '--fleet', cluster.fleetDir, '--out', archive, '--bootstrap', cluster.node('a').multiaddr, '--config', overrides])
  t.match(stdout, /native: .*classic-level \(prebuilds\/linux-arm64\/classic-level\.armv8\.node\)/)
  t.match(stdout, /native: .*epoll \(epoll\/build\/Release\/epoll\.node, compiled for the image\)/, 'onoff\'s epoll is compiled for arm64 into the image (arm64-gpio.test.ts runs it)')
  t.match(stdout, /native: .*@gatemesh\/malloc-trim \(@gatemesh\/malloc-trim\/build\/Release\/malloc_trim\.node, compiled for the image\)/, 'and the agent\'s own malloc_trim addon')
  await unpackImage(archive, root)
  const release = await currentRelease(root)
  t.equal(await elfMachine(release.node), EM_AARCH64, `the release's node/bin/node (${release.node.slice(root.length + 1)}) is an aarch64 ELF`)
  const natives = await filesUnder(join(root, 'opt/gatemesh'), '.node')
  t.ok(natives.length >= 2, `${natives.length} native modules`)
  for (const f of natives) t.equal(await elfMachine(f), EM_AARCH64, `${f.split('node_modules/')[1]} is an aarch64 ELF (e_machine 0xB7)`)
  t.notOk(natives.some(f => /linux-x64|linux\/x64|darwin|win32|android|musl/.test(f)), 'no other platform\'s prebuilds')
  t.ok(natives.some(f => f.endsWith('node_modules/epoll/build/Release/epoll.node')), 'epoll.node is there, where onoff\'s `bindings` looks')
  t.ok(natives.some(f => f.endsWith('node_modules/@gatemesh/malloc-trim/build/Release/malloc_trim.node')), 'the agent\'s malloc_trim addon, compiled for arm64, is there')
  t.ok(natives.some(f => f.endsWith('onnxruntime-node/bin/napi-v6/linux/arm64/onnxruntime_binding.node')), 'ONNX Runtime\'s arm64 binding is in')
  const image = JSON.parse(await readFile(join(root, 'opt/gatemesh/image.json'), 'utf8'))
  for (const r of image.modules.runtimes) console.error(`# arm64 image: ${r.package} ${(r.bytesBefore / 1048576).toFixed(1)} MiB installed, ${(r.bytesAfter / 1048576).toFixed(1)} MiB in the image`)
})

// running arm64 code here needs qemu-user and an arm64 sysroot (.ci/run installs both); GATEMESH_TEST_QEMU=0 skips
const qemu = process.env.GATEMESH_TEST_QEMU === '0' ? undefined : 'qemu-aarch64-static'
await t.test('under qemu-aarch64, the image\'s arm64 Node runs its agent, which joins the mesh and runs a placement', { skip: qemu == null ? 'GATEMESH_TEST_QEMU=0' : false }, async t => {
  await access(SYSROOT).catch(() => { throw new Error(`${SYSROOT} is missing: apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross`) })
  const release = await currentRelease(root)
  const { stdout: arch } = await exec(qemu!, ['-L', SYSROOT, release.node, '-p', 'process.arch + " " + process.version'])
  t.match(arch.trim(), /^arm64 v22\./, `the image's runtime reports ${arch.trim()}`)

  const device: ClusterNode = await imageDevice(root, p2pPort, apiPort)
  cluster.nodes.set('device', device)
  const started = Date.now()
  // the unit's command line: the image's loader (run here), which execs the release's arm64 node (run by qemu)
  device.process = await startImageAgent(root, { emulator: [qemu!, '-L', SYSROOT], log: join(cluster.root, 'device.log') })
  const child = device.child = device.process.child
  await waitFor(async () => child.exitCode == null && /qemu-aarch64-static$/.test(await readlink(`/proc/${child.pid!}/exe`)), 'the loader to exec the agent', 30_000, 100)
  t.pass('the loader\'s process is now the emulator')
  t.ok((await readFile(`/proc/${child.pid!}/maps`, 'utf8')).includes(release.node), 'running the image\'s own arm64 node')
  await waitFor(async () => (await cluster.members('a')).get(device.peerId)?.state === 'alive', 'a to see the arm64 agent alive', 120_000, 250)
  await waitFor(async () => {
    const m = await cluster.members('device')
    return ['a', 'b'].every(n => m.get(cluster.node(n).peerId)?.state === 'alive')
  }, 'the arm64 agent to see a and b alive', 120_000, 250)
  const joinedMs = Date.now() - started
  t.pass(`joined ${(joinedMs / 1000).toFixed(1)} s after start (emulated)`)
  const { record } = await (await fetch(`${device.api}/v1/release`, { signal: AbortSignal.timeout(60_000) })).json() as { record: { version: string, managed: boolean } }
  t.match(record, { version: release.version, managed: true }, 'it runs the image\'s release under the loader')
  console.error(`# arm64 image under qemu-aarch64-static: joined the mesh ${(joinedMs / 1000).toFixed(1)} s after start`)

  await publishAnomalyBundle(cluster, 'a')
  await deploy(cluster, 'a', { id: 'pin-arm64', model: { name: 'anomaly', version: '1.0.0' }, placement: { policy: 'pinned', nodes: [device.peerId] }, instance: { name: 'arm64-anomaly' } })
  await waitFor(async () => (await runningOn(cluster, 'a', 'pin-arm64')).join() === 'device', 'the instance to run on the arm64 agent', 180_000, 500)
  t.pass(`a pinned deployment runs on it (${((Date.now() - started) / 1000).toFixed(1)} s after start)`)

  // an ONNX model on the arm64 agent: the native binding where it loads, its wasm build where it cannot (it segfaults under qemu-user)
  const fleet = await loadFleet(cluster.fleetDir)
  const onnxDir = join(cluster.root, 'onnx-model')
  await mkdir(onnxDir, { recursive: true })
  await copyFile(fixture('mlp.onnx'), join(onnxDir, 'mlp.onnx'))
  const built = await buildBundle({ modelDir: onnxDir, name: 'mlp-onnx', version: '1', signer: { key: fleet.privateKey }, out: join(cluster.root, 'mlp-onnx.zip') })
  const up = await fetch(`${cluster.node('a').api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('a') }, body: await readFile(built.out) })
  t.ok(up.ok, 'the ONNX bundle is published')
  await deploy(cluster, 'a', { id: 'onnx-arm64', model: { name: 'mlp-onnx', version: '1' }, placement: { policy: 'pinned', nodes: [device.peerId] } })
  await waitFor(async () => (await runningOn(cluster, 'a', 'onnx-arm64')).join() === 'device', 'the ONNX model to run on the arm64 agent', 300_000, 500)
  const res = await fetch(`${device.api}/v1/models/mlp-onnx:predict`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ instances: REFERENCE.mlp.input }), signal: AbortSignal.timeout(60_000) })
  const body = await res.json() as { predictions: number[][] }
  t.equal(res.status, 200, 'the arm64 agent answers predict for the ONNX model')
  t.ok(maxDiff(body.predictions, REFERENCE.mlp.output) <= 1e-5, 'and matches TensorFlow\'s reference')
  const status = await (await fetch(`${device.api}/v1/status`)).json() as { runtime: { backends: { onnx: { backend: string, inUse: boolean } } } }
  t.match(status.runtime.backends.onnx, { backend: /^onnx-(native|wasm)$/, inUse: true })
  console.error(`# arm64 image under qemu-aarch64-static: the ONNX model runs on ${status.runtime.backends.onnx.backend}`)
})
