import { execFile } from 'node:child_process'
import { access, mkdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { freePort } from '../../node/cli/ports.ts'
import { Cluster, waitFor, type ClusterNode } from '../helpers/cluster.ts'
import { buildImageCli, elfMachine, filesUnder, imageDevice, startImageAgent, unpackImage } from '../helpers/image.ts'
import { deploy, publishAnomalyBundle, runningOn } from '../helpers/scheduling.ts'

const exec = promisify(execFile)
const EM_AARCH64 = 0xb7
/** Debian's arm64 glibc, libstdc++ and libgcc (libc6-arm64-cross and friends), the sysroot qemu-user loads them from. */
const SYSROOT = '/usr/aarch64-linux-gnu'

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
await cluster.addNode('a', { role: 'server' })
await cluster.addNode('b')
await Promise.all(['a', 'b'].map(async n => await cluster.start(n)))

const p2pPort = await freePort()
const apiPort = await freePort()
const overrides = join(cluster.root, 'device-config.json')
// a GPIO input and output configured in the image: the sysfs driver (onoff and its epoll, compiled for arm64)
const gpio = {
  sensors: [{ id: 'door', type: 'gpio', pin: 17, edge: 'both', debounceMs: 0 }],
  actuators: [{ id: 'relay', type: 'gpio', pin: 18, initial: 1 }]
}
await writeFile(overrides, JSON.stringify({ listen: [`/ip4/127.0.0.1/tcp/${p2pPort}`], api: { host: '127.0.0.1', port: apiPort }, logs: { stdout: false }, ...gpio }))
const archive = join(cluster.root, 'gatemesh-arm64.tar.gz')
const root = join(cluster.root, 'device-root')

await t.test('an arm64 image carries only aarch64 binaries', async t => {
  const { stdout } = await buildImageCli(['--arch', 'arm64', '--fleet', cluster.fleetDir, '--out', archive, '--bootstrap', cluster.node('a').multiaddr, '--config', overrides])
  t.match(stdout, /native: .*classic-level \(prebuilds\/linux-arm64\/classic-level\.armv8\.node\)/)
  t.match(stdout, /native: .*epoll \(epoll\/build\/Release\/epoll\.node, compiled for the image\)/, 'onoff\'s epoll is compiled for arm64 into the image')
  await unpackImage(archive, root)
  t.equal(await elfMachine(join(root, 'opt/gatemesh/node/bin/node')), EM_AARCH64, 'bin/node is an aarch64 ELF')
  const natives = await filesUnder(join(root, 'opt/gatemesh'), '.node')
  t.ok(natives.length >= 2, `${natives.length} native modules`)
  for (const f of natives) t.equal(await elfMachine(f), EM_AARCH64, `${f.split('node_modules/')[1]} is an aarch64 ELF (e_machine 0xB7)`)
  t.notOk(natives.some(f => /linux-x64|darwin|win32|android|musl/.test(f)), 'no other platform\'s prebuilds')
  t.ok(natives.some(f => f.endsWith('node_modules/epoll/build/Release/epoll.node')), 'epoll.node is there, where onoff\'s `bindings` looks')
})

// running arm64 code here needs qemu-user and an arm64 sysroot (.ci/run installs both); GATEMESH_TEST_QEMU=0 skips
const qemu = process.env.GATEMESH_TEST_QEMU === '0' ? undefined : 'qemu-aarch64-static'
await t.test('under qemu-aarch64, the image\'s arm64 Node runs its agent, which joins the mesh and runs a placement', { skip: qemu == null ? 'GATEMESH_TEST_QEMU=0' : false }, async t => {
  await access(SYSROOT).catch(() => { throw new Error(`${SYSROOT} is missing: apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross`) })
  const { stdout: arch } = await exec(qemu!, ['-L', SYSROOT, join(root, 'opt/gatemesh/node/bin/node'), '-p', 'process.arch + " " + process.version'])
  t.match(arch.trim(), /^arm64 v22\./, `the image's runtime reports ${arch.trim()}`)

  const device: ClusterNode = await imageDevice(root, p2pPort, apiPort)
  cluster.nodes.set('device', device)
  const qemuRoot = await fakeSysfsGpio(join(cluster.root, 'qemu-root'))
  const started = Date.now()
  // its own UTS namespace, hostname "0": the GPIO input's value file (see fakeSysfsGpio)
  const child = await startImageAgent(root, { prefix: ['unshare', '--uts', 'sh', '-c', 'hostname 0 && exec "$@"', 'sh', qemu!, '-L', qemuRoot], log: join(cluster.root, 'device.log') })
  device.child = child
  t.match(await readlink(`/proc/${child.pid!}/exe`), /qemu-aarch64-static$/, 'the process is the emulator running the image\'s node')
  await waitFor(async () => (await cluster.members('a')).get(device.peerId)?.state === 'alive', 'a to see the arm64 agent alive', 120_000, 250)
  await waitFor(async () => {
    const m = await cluster.members('device')
    return ['a', 'b'].every(n => m.get(cluster.node(n).peerId)?.state === 'alive')
  }, 'the arm64 agent to see a and b alive', 120_000, 250)
  const joinedMs = Date.now() - started

  // GPIO from the image: the agent opened its sensor and actuator through the image's onoff and arm64 epoll
  type Sensor = { id: string, status: string, readings: number, lastReading?: { value: number }, error?: string }
  const sensors = async (): Promise<Sensor[]> =>
    ((await (await fetch(`${device.api}/v1/sensors`, { signal: AbortSignal.timeout(10_000) })).json()) as { sensors: Sensor[] }).sensors
  const door = await waitFor(async () => (await sensors()).find(s => s.id === 'door' && (s.status === 'open' || s.error != null)), 'the GPIO sensor to open', 120_000, 500)
  t.equal(door.status, 'open', `the GPIO sensor is open${door.error == null ? '' : ` (${door.error})`}`)
  const maps = await readFile(`/proc/${child.pid!}/maps`, 'utf8')
  t.ok(maps.includes(join(root, 'opt/gatemesh/node_modules/epoll/build/Release/epoll.node')), 'the emulated process has the image\'s arm64 epoll.node mapped')
  const gpioDir = join(qemuRoot, 'sys/class/gpio')
  t.equal(await readFile(join(gpioDir, 'gpio17/edge'), 'utf8'), 'both', 'onoff configured the input\'s edge through sysfs')
  t.equal(await readFile(join(gpioDir, 'gpio18/direction'), 'utf8'), 'high', 'and the actuator as an output, initially high')
  // an edge: the value changes and the kernel raises POLLPRI, as sysfs does; epoll wakes onoff
  await exec('nsenter', ['--uts', '--target', String(child.pid!), 'hostname', '1'])
  const reading = await waitFor(async () => (await sensors()).find(s => s.id === 'door' && s.readings > 0), 'a reading from the GPIO edge', 60_000, 250)
  t.equal(reading.lastReading?.value, 1, 'the rising edge arrives through epoll as a reading of 1')
  t.pass(`joined ${(joinedMs / 1000).toFixed(1)} s after start (emulated)`)
  console.error(`# arm64 image under qemu-aarch64-static: joined the mesh ${(joinedMs / 1000).toFixed(1)} s after start`)

  await publishAnomalyBundle(cluster, 'a')
  await deploy(cluster, 'a', { id: 'pin-arm64', model: { name: 'anomaly', version: '1.0.0' }, placement: { policy: 'pinned', nodes: [device.peerId] }, instance: { name: 'arm64-anomaly' } })
  await waitFor(async () => (await runningOn(cluster, 'a', 'pin-arm64')).join() === 'device', 'the instance to run on the arm64 agent', 180_000, 500)
  t.pass(`a pinned deployment runs on it (${((Date.now() - started) / 1000).toFixed(1)} s after start)`)
})

/**
 * A root for qemu-user's `-L`: the arm64 libraries (Debian's cross
 * sysroot) and a fake /sys/class/gpio, which qemu-user finds there first
 * when the emulated program opens a path. This kernel has no GPIO at all,
 * and epoll refuses regular files (EPERM), so the input's `value` is a
 * kernel file that behaves like a sysfs attribute: it reads as text at
 * offset 0, and a change raises POLLPRI|POLLERR until it is read again.
 * /proc/sys/kernel/hostname is one, and the agent gets a UTS namespace of
 * its own, so the test flips the "line" with `hostname 1` in there.
 */
async function fakeSysfsGpio (dir: string): Promise<string> {
  await mkdir(join(dir, 'sys/class/gpio/gpio17'), { recursive: true })
  await mkdir(join(dir, 'sys/class/gpio/gpio18'), { recursive: true })
  await symlink(join(SYSROOT, 'lib'), join(dir, 'lib'))
  for (const f of ['export', 'unexport', 'gpio17/direction', 'gpio17/edge', 'gpio17/active_low', 'gpio18/direction', 'gpio18/edge', 'gpio18/active_low', 'gpio18/value']) {
    await writeFile(join(dir, 'sys/class/gpio', f), '')
  }
  await symlink('/proc/sys/kernel/hostname', join(dir, 'sys/class/gpio/gpio17/value'))
  return dir
}
