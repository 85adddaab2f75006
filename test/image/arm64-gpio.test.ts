import { access, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { initFleet } from '../../node/identity/fleet.ts'
import { freePort } from '../helpers/ports.ts'
import { CLI, waitFor } from '../helpers/cluster.ts'
import { currentRelease, elfMachine, startImageAgent, unpackImage } from '../helpers/image.ts'
import { run, type TestProcess } from '../helpers/processes.ts'
/** Debian's arm64 glibc, libstdc++ and libgcc (libc6-arm64-cross and friends). */
const SYSROOT = '/usr/aarch64-linux-gnu'

// GPIO from the arm64 image: the sysfs driver (onoff, and its epoll compiled
// for arm64 by the image build) in the image's own agent, run by qemu-user.
// The kernel here has no GPIO at all; see fakeSysfsGpio for what stands in.
const qemu = process.env.GATEMESH_TEST_QEMU === '0' ? undefined : 'qemu-aarch64-static'
if (qemu == null) {
  t.comment('SKIP: GATEMESH_TEST_QEMU=0')
  t.pass('arm64 GPIO test skipped')
} else {
  await arm64Gpio(qemu)
}

async function arm64Gpio (qemu: string): Promise<void> {
  await access(SYSROOT).catch(() => { throw new Error(`${SYSROOT} is missing: apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross`) })
  const work = await mkdtemp(join(tmpdir(), 'gatemesh-arm64-gpio-'))
  let child: TestProcess | undefined
  t.teardown(async () => {
    // a minute to unexport under emulation, then its group is killed
    await child?.stop(60_000)
    await rm(work, { recursive: true, force: true })
  })
  const fleetDir = join(work, 'fleet')
  await initFleet(fleetDir)
  const apiPort = await freePort()
  const p2pPort = await freePort()
  const overrides = join(work, 'device-config.json')
  await writeFile(overrides, JSON.stringify({
    listen: [`/ip4/127.0.0.1/tcp/${p2pPort}`],
    api: { host: '127.0.0.1', port: apiPort },
    logs: { stdout: false },
    sensors: [{ id: 'door', type: 'gpio', pin: 17, edge: 'both', debounceMs: 0 }],
    actuators: [{ id: 'relay', type: 'gpio', pin: 18, initial: 1 }]
  }))
  const archive = join(work, 'gatemesh-arm64.tar.gz')
  const root = join(work, 'device-root')
  // in the image's release, once it is unpacked (releases/<version>/node_modules)
  let epoll = ''
  let node = ''
  // every assertion lives in a subtest: tap ends a root test that asserted and then waits
  await t.test('the arm64 image is built with epoll compiled for AArch64', async t => {
    // as a user runs it; a loaded machine may take many minutes to compile epoll and pack the image
    await run(process.execPath, [CLI, 'image', 'build', '--arch', 'arm64', '--fleet', fleetDir, '--out', archive, '--config', overrides], { timeoutMs: 40 * 60_000 })
    await unpackImage(archive, root)
    const release = await currentRelease(root)
    epoll = join(release.dir, 'node_modules/epoll/build/Release/epoll.node')
    node = release.node
    t.equal(await elfMachine(epoll), 0xb7, 'the image carries epoll.node compiled for AArch64')
  })

  const qemuRoot = join(work, 'qemu-root')
  let started = 0
  const startAgent = async (): Promise<TestProcess> => {
    await fakeSysfsGpio(qemuRoot)
    started = Date.now()
    // its own UTS namespace with hostname "0": the GPIO input's value file (see fakeSysfsGpio); the
    // unit's command line (the image's loader) runs here and execs the release's arm64 node under qemu
    return await startImageAgent(root, { prefix: ['unshare', '--uts', 'sh', '-c', 'hostname 0 && exec "$@"', 'sh'], emulator: [qemu, '-L', qemuRoot], log: join(work, 'device.log') })
  }
  type Sensor = { id: string, status: string, readings: number, lastReading?: { value: number }, error?: string }
  const sensors = async (): Promise<Sensor[]> => {
    if (child?.exit != null) throw new Error(`the agent exited with ${JSON.stringify(child.exit)}: ${await readFile(join(work, 'device.log'), 'utf8').catch(() => '')}`)
    const res = await fetch(`http://127.0.0.1:${apiPort}/v1/sensors`, { signal: AbortSignal.timeout(10_000) })
    return ((await res.json()) as { sensors: Sensor[] }).sensors
  }

  await t.test('the emulated agent opens a GPIO sensor and actuator through the image\'s onoff and arm64 epoll', async t => {
    child = await startAgent()
    const door = await waitFor(async () => (await sensors()).find(s => s.id === 'door' && (s.status === 'open' || s.error != null)), 'the GPIO sensor to open', 600_000, 500)
    t.equal(door.status, 'open', `the GPIO sensor is open${door.error == null ? '' : ` (${door.error})`}`)
    t.pass(`open ${((Date.now() - started) / 1000).toFixed(1)} s after start (emulated)`)
    const maps = await readFile(`/proc/${child!.pid!}/maps`, 'utf8')
    t.ok(maps.includes(epoll), 'the emulated process has the image\'s arm64 epoll.node mapped')
    t.ok(maps.includes(node), 'and runs the image\'s own Node (its release\'s runtime)')
    const gpio = join(qemuRoot, 'sys/class/gpio')
    t.equal(await readFile(join(gpio, 'export'), 'utf8'), '18', 'onoff exported the pins through sysfs (the last export written: the actuator\'s)')
    t.equal(await readFile(join(gpio, 'gpio17/direction'), 'utf8'), 'in', 'the sensor as an input')
    t.equal(await readFile(join(gpio, 'gpio17/edge'), 'utf8'), 'both', 'with both edges raising interrupts')
    t.equal(await readFile(join(gpio, 'gpio18/direction'), 'utf8'), 'high', 'the actuator as an output, initially high')
  })

  await t.test('an edge on the line arrives as a reading through epoll', async t => {
    // the value changes and the kernel raises POLLPRI, as sysfs does on an edge; epoll wakes onoff
    await run('nsenter', ['--uts', '--target', String(child!.pid!), 'hostname', '1'])
    const door = await waitFor(async () => (await sensors()).find(s => s.id === 'door' && s.readings > 0), 'a reading from the GPIO edge', 300_000, 250)
    t.equal(door.lastReading?.value, 1, 'the rising edge is a reading of 1')
    await run('nsenter', ['--uts', '--target', String(child!.pid!), 'hostname', '0'])
    const back = await waitFor(async () => (await sensors()).find(s => s.id === 'door' && s.readings > 1), 'a reading from the falling edge', 300_000, 250)
    t.equal(back.lastReading?.value, 0, 'and the falling edge a reading of 0')
  })

  await t.test('stopping the agent unexports the pins', async t => {
    await child!.stop(60_000)
    t.equal(await readFile(join(qemuRoot, 'sys/class/gpio/unexport'), 'utf8').then(v => ['17', '18'].includes(v)), true, 'onoff wrote the pins to unexport on close')
  })
}

/**
 * A root for qemu-user's `-L`: the arm64 libraries (Debian's cross
 * sysroot) and a fake /sys/class/gpio, which qemu-user finds there first
 * when the emulated program opens a path. This kernel has no GPIO
 * (no GPIOLIB), and epoll refuses regular files (EPERM), so the input's
 * `value` is a kernel file that behaves like a sysfs attribute: it reads as
 * text at offset 0, and a change raises POLLPRI|POLLERR until it is read
 * again. /proc/sys/kernel/hostname is one; the agent gets a UTS namespace
 * of its own, and the test flips the "line" with `hostname 1` in there.
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
