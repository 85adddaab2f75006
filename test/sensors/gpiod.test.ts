import { access, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { checkDevices } from '../../node/config/devices.ts'
import { GpioActuator } from '../../sensors/gpio.ts'
import { GpiodSensor, type GpiodSensorInit } from '../../sensors/gpiod.ts'
import { detectTools } from '../../sensors/gpiod-tools.ts'
import { createSensor } from '../../sensors/index.ts'
import { FakeGpiodBoard } from '../helpers/fake-gpiod.ts'
import { exec } from '../helpers/processes.ts'
import { sensorSuite } from './suite.ts'

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const CHIP = 'gpiochip0'

// Where the kernel has GPIO chips (a board, or gpio-sim), say so; this one has neither, and the test says that plainly.
const chips = await readdir('/dev').then(d => d.filter(f => /^gpiochip\d+$/.test(f))).catch(() => [])
const gpioSim = await access('/sys/kernel/config/gpio-sim').then(() => true, () => false)
const why = [chips.length === 0 ? 'no /dev/gpiochip* (this kernel is built without GPIO support)' : null, gpioSim ? null : 'no gpio-sim (no /sys/kernel/config/gpio-sim: configfs or the module is absent)'].filter(x => x != null).join('; ')
t.comment(`chardev GPIO: ${chips.length > 0 ? `real chips here: ${chips.join(', ')} (not driven by this test)` : 'NOT tested against a real GPIO chip'}${why === '' ? '' : ` — ${why}`}. The driver runs against fake libgpiod 1.x and 2.x tools (test/helpers/fake-gpiod.ts) and, below, against the real libgpiod tools installed here, which can only report that the chip is missing.`)

for (const major of [1, 2] as const) {
  await t.test(`libgpiod ${major}.x tools`, async t => {
    const board = await FakeGpiodBoard.create({ major })
    t.teardown(async () => { await board.close() })
    let nextLine = 1
    const sensor = (init: Partial<GpiodSensorInit> & { id: string }): GpiodSensor => new GpiodSensor({ chip: CHIP, line: nextLine++, edge: 'both', debounceMs: 0, activeLow: false, bias: 'as-is', bin: board.bin, ...init })

    await t.test('the tools are told apart by their version', async t => {
      const tools = await detectTools('probe', board.bin)
      t.equal(tools.major, major)
      t.equal(tools.version, major === 1 ? 'v1.6.3' : 'v2.2.1')
    })

    sensorSuite(t, {
      type: 'gpio',
      binary: true,
      async make ({ id, min, max, sequence }) {
        const s = sensor({ id, unit: 'u', min, max })
        const line = nextLine - 1
        return {
          sensor: s,
          play: async () => {
            if (s.status === 'open') await board.held(CHIP, line, 'gpiomon')
            for (const level of sequence) {
              board.set(CHIP, line, Number(level) as 0 | 1)
              await sleep(5)
            }
          }
        }
      }
    })

    await t.test('read() before any edge gives the level gpioget found at open', async t => {
      const s = sensor({ id: 'initial' })
      board.set(CHIP, nextLine - 1, 1)
      await s.open()
      t.equal((await s.read()).value, 1)
      await s.close()
    })

    await t.test('a bouncing contact gives one reading per settled level; edge and active-low settings reach the tool', async t => {
      const bouncy = sensor({ id: 'button', debounceMs: 40 })
      const line = nextLine - 1
      const values: number[] = []
      bouncy.addEventListener('reading', evt => values.push(evt.detail.value))
      await bouncy.open()
      await board.held(CHIP, line, 'gpiomon')
      for (const level of [1, 0, 1, 0, 1, 0, 1] as const) board.set(CHIP, line, level)
      await sleep(300)
      for (const level of [0, 1, 0] as const) board.set(CHIP, line, level)
      await sleep(300)
      t.same(values, [1, 0], 'ten edges, two readings')
      await bouncy.close()

      const rising = sensor({ id: 'rising', edge: 'rising', activeLow: true })
      const rline = nextLine - 1
      board.set(CHIP, rline, 1)
      await rising.open()
      t.equal((await rising.read()).value, 0, 'active-low: a high line reads 0')
      const got: number[] = []
      rising.addEventListener('reading', evt => got.push(evt.detail.value))
      await board.held(CHIP, rline, 'gpiomon')
      board.set(CHIP, rline, 0)
      await sleep(50)
      board.set(CHIP, rline, 1)
      await waitUntil(() => got.length >= 1)
      await sleep(100)
      t.same(got, [1], 'only the (active-low) rising edge, the line going low, is reported')
      await rising.close()
    })

    await t.test('a line held by someone else, a missing chip and a bad line fail to open with the tool\'s reason', async t => {
      const first = sensor({ id: 'first' })
      const line = nextLine - 1
      await first.open()
      const second = new GpiodSensor({ id: 'second', chip: CHIP, line, edge: 'both', debounceMs: 0, activeLow: false, bias: 'as-is', bin: board.bin })
      await t.rejects(second.open(), { code: 'ERR_GPIO_UNAVAILABLE', sensorId: 'second', message: /gpiochip0 line \d+ .*Device or resource busy/ })
      t.equal(second.status, 'closed')
      await first.close()
      await waitUntil(() => board.holder(CHIP, line) == null)
      t.pass('close releases the line')
      await t.rejects(sensor({ id: 'nochip', chip: 'gpiochip7' }).open(), { code: 'ERR_GPIO_UNAVAILABLE', message: /gpiochip7 .*No such file or directory/ })
      await t.rejects(sensor({ id: 'noline', line: 999 }).open(), { code: 'ERR_GPIO_UNAVAILABLE', message: /line 999 .*Invalid argument/ })
    })

    await t.test('a monitor that dies is restarted and readings go on', async t => {
      const s = sensor({ id: 'phoenix' })
      const line = nextLine - 1
      const values: number[] = []
      s.addEventListener('reading', evt => values.push(evt.detail.value))
      await s.open()
      await board.held(CHIP, line, 'gpiomon')
      board.set(CHIP, line, 1)
      await waitUntil(() => values.length === 1)
      board.drop(CHIP, line)
      await sleep(100)
      await board.held(CHIP, line, 'gpiomon')
      board.set(CHIP, line, 0)
      await waitUntil(() => values.length === 2)
      t.same(values, [1, 0], 'the edge after the restart is reported')
      t.equal(s.status, 'open')
      await s.close()
    })

    await t.test('an actuator holds its line with gpioset: initial level, writes, pulses, release', async t => {
      const line = nextLine++
      const relay = new GpioActuator({ id: 'relay', driver: 'chardev', chip: CHIP, line, activeLow: true, initial: 0, gpiodBin: board.bin })
      await t.rejects(relay.write(1), { code: 'ERR_SENSOR_NOT_OPEN' })
      await relay.open()
      t.equal(board.holder(CHIP, line), 'gpioset', 'gpioset holds the line')
      t.equal(board.level(CHIP, line), 1, 'initial 0 on an active-low line drives it high')
      await relay.write(1)
      t.equal(board.level(CHIP, line), 0)
      const start = Date.now()
      await relay.write(1, 40)
      t.ok(Date.now() - start >= 35, 'the pulse waits for its duration')
      t.equal(relay.value, 0, 'and returns to the opposite level')
      t.same(board.writes.filter(([, l]) => l === line).map(([, , v]) => v), [1, 0, 0, 1], 'physical levels driven, in order')
      await relay.close()
      await waitUntil(() => board.holder(CHIP, line) == null)
      t.pass('close stops gpioset and releases the line')
    })
  })
}

await t.test('config picks the driver: chardev builds the libgpiod driver, sysfs the onoff one', async t => {
  const chardev = createSensor({ id: 'cd', type: 'gpio', driver: 'chardev', chip: CHIP, line: 3, edge: 'both', debounceMs: 10, activeLow: false, bias: 'as-is' })
  t.type(chardev, GpiodSensor)
  const sysfs = createSensor({ id: 'sf', type: 'gpio', driver: 'sysfs', pin: 17, edge: 'both', debounceMs: 10, activeLow: false, bias: 'as-is' })
  t.notOk(sysfs instanceof GpiodSensor)
  t.throws(() => createSensor({ id: 'x', type: 'gpio', driver: 'chardev', chip: CHIP, edge: 'both', debounceMs: 10, activeLow: false, bias: 'as-is' }), { code: 'ERR_SENSOR_CONFIG', field: 'line' })
})

await t.test('the config names what each driver is missing', async t => {
  const check = (sensors: unknown[], actuators: unknown[] = []): unknown => { const c = { sensors, actuators }; checkDevices(c); return c }
  t.throws(() => check([{ id: 's', type: 'gpio', driver: 'chardev', chip: CHIP }]), { code: 'ERR_CONFIG', field: 'config.sensors[0].line', message: /line: is required/ })
  t.throws(() => check([{ id: 's', type: 'gpio', driver: 'chardev', line: 3 }]), { code: 'ERR_CONFIG', field: 'config.sensors[0].chip' })
  t.throws(() => check([{ id: 's', type: 'gpio' }]), { code: 'ERR_CONFIG', field: 'config.sensors[0].pin' }, 'sysfs is the default and needs a pin')
  t.throws(() => check([{ id: 's', type: 'gpio', driver: 'chardev', chip: '../../etc/passwd', line: 1 }]), { code: 'ERR_CONFIG', field: 'config.sensors[0].chip' }, 'a chip is a name, a number or /dev/gpiochipN, nothing else')
  t.throws(() => check([], [{ id: 'r', type: 'gpio', driver: 'chardev', chip: CHIP }]), { code: 'ERR_CONFIG', field: 'config.actuators[0].line' })
  t.throws(() => check([{ id: 's', type: 'gpio', driver: 'spi', pin: 1 }]), { code: 'ERR_CONFIG', field: 'config.sensors[0].driver' })
  t.same(check([{ id: 's', type: 'gpio', driver: 'chardev', chip: '/dev/gpiochip1', line: 5 }]), { sensors: [{ id: 's', type: 'gpio', driver: 'chardev', chip: '/dev/gpiochip1', line: 5, edge: 'both', debounceMs: 10, activeLow: false, bias: 'as-is' }], actuators: [] }, 'defaults filled')
})

await t.test('without libgpiod\'s tools the driver says what to install', async t => {
  const empty = await mkdtemp(join(tmpdir(), 'gatemesh-no-gpiod-'))
  t.teardown(async () => { await rm(empty, { recursive: true, force: true }) })
  const s = new GpiodSensor({ id: 'door', chip: CHIP, line: 4, edge: 'both', debounceMs: 0, activeLow: false, bias: 'as-is', bin: empty })
  await t.rejects(s.open(), { code: 'ERR_GPIO_UNAVAILABLE', sensorId: 'door', message: /gpiomon was not found.*apt-get install gpiod/ })
  const relay = new GpioActuator({ id: 'relay', driver: 'chardev', chip: CHIP, line: 5, activeLow: false, initial: 0, gpiodBin: empty })
  await t.rejects(relay.open(), { code: 'ERR_GPIO_UNAVAILABLE', message: /apt-get install gpiod/ })
})

// The real libgpiod tools (Debian's gpiod, installed by .ci/run) take the driver's command lines; with no chip they can only say so.
const real = await exec('gpiomon', ['--version']).then(r => r.stdout, () => undefined)
await t.test('the real libgpiod tools accept the driver\'s command lines', { skip: real == null ? 'gpiomon is not installed (apt-get install gpiod)' : false }, async t => {
  const tools = await detectTools('real')
  t.match(real!, new RegExp(`\\(libgpiod\\) ${tools.version.replaceAll('.', '\\.')}`), `found libgpiod ${tools.version}`)
  const s = new GpiodSensor({ id: 'real', chip: CHIP, line: 17, edge: 'rising', debounceMs: 0, activeLow: true, bias: 'pull-up' })
  const err = await s.open().catch(e => e)
  t.equal(err.code, 'ERR_GPIO_UNAVAILABLE')
  // an option the tool did not know would read "unrecognized option"; a missing chip is the only complaint left
  t.match(err.message, /cannot read gpiochip0 line 17 \(gpioget: .*No such file or directory\)/, err.message)
  t.comment(`real libgpiod ${tools.version}: ${String(err.message)}`)
})

async function waitUntil (fn: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!fn()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await sleep(20)
  }
}
