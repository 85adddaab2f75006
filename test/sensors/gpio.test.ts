import t from 'tap'
import { GpioUnavailableError } from '../../sensors/errors.ts'
import { GpioActuator, GpioSensor, loadOnoff } from '../../sensors/gpio.ts'
import { FakeBoard } from '../helpers/fake-gpio.ts'
import { sensorSuite } from './suite.ts'

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

let nextPin = 10
const board = new FakeBoard()

sensorSuite(t, {
  type: 'gpio',
  binary: true,
  async make ({ id, min, max, sequence }) {
    const pin = nextPin++
    const sensor = new GpioSensor({ id, unit: 'u', min, max, pin, edge: 'both', debounceMs: 0, activeLow: false, gpio: board.gpioClass() })
    return {
      sensor,
      play: async () => {
        for (const level of sequence) {
          board.set(pin, Number(level) as 0 | 1)
          await sleep(5)
        }
      }
    }
  }
})

t.test('gpio: a bouncing contact gives one reading per settled level', async t => {
  const pin = nextPin++
  const sensor = new GpioSensor({ id: 'button', pin, edge: 'both', debounceMs: 30, activeLow: false, gpio: board.gpioClass() })
  const values: number[] = []
  sensor.addEventListener('reading', evt => values.push(evt.detail.value))
  await sensor.open()
  board.bounce(pin, 1, 7)
  await sleep(80)
  board.bounce(pin, 0, 4)
  await sleep(80)
  t.same(values, [1, 0], 'eleven edges, two readings')
  await sensor.close()
})

t.test('gpio: the edge setting filters interrupts', async t => {
  const pin = nextPin++
  const sensor = new GpioSensor({ id: 'rising', pin, edge: 'rising', debounceMs: 0, activeLow: false, gpio: board.gpioClass() })
  const values: number[] = []
  sensor.addEventListener('reading', evt => values.push(evt.detail.value))
  await sensor.open()
  board.set(pin, 1)
  board.set(pin, 0)
  board.set(pin, 1)
  t.same(values, [1, 1].slice(0, 1), 'falling edges never reach the driver; the repeated level is not reported twice')
  await sensor.close()
})

t.test('gpio actuator: write and pulse', async t => {
  const pin = nextPin++
  const relay = new GpioActuator({ id: 'relay', pin, activeLow: false, initial: 0, gpio: board.gpioClass() })
  await t.rejects(relay.write(1), { code: 'ERR_SENSOR_NOT_OPEN' })
  await relay.open()
  await relay.write(1)
  t.equal(relay.value, 1)
  const start = Date.now()
  await relay.write(1, 40)
  t.ok(Date.now() - start >= 35, 'pulse waits for its duration')
  t.equal(relay.value, 0, 'pulse returns to the opposite level')
  t.same(board.writes.filter(([p]) => p === pin).map(([, v]) => v), [1, 1, 0])
  await relay.close()
})

t.test('gpio: a clear error where GPIO is not accessible', async t => {
  // the real onoff on this machine: no /sys/class/gpio
  const err = await loadOnoff('door').catch(e => e)
  t.type(err, GpioUnavailableError)
  t.equal(err.code, 'ERR_GPIO_UNAVAILABLE')
  t.equal(err.sensorId, 'door')
  t.match(err.message, /gpio door: .*(not accessible|cannot be loaded)/)
  const sensor = new GpioSensor({ id: 'door', pin: 17, edge: 'both', debounceMs: 10, activeLow: false })
  await t.rejects(sensor.open(), { code: 'ERR_GPIO_UNAVAILABLE', sensorId: 'door' }, 'opening the real driver fails with the typed error')
  t.equal(sensor.status, 'closed', 'and the sensor is left closed')

  const busy = nextPin++
  const Gpio = board.gpioClass()
  const first = new GpioSensor({ id: 'a', pin: busy, edge: 'both', debounceMs: 0, activeLow: false, gpio: Gpio })
  await first.open()
  const second = new GpioSensor({ id: 'b', pin: busy, edge: 'both', debounceMs: 0, activeLow: false, gpio: Gpio })
  await t.rejects(second.open(), { code: 'ERR_GPIO_UNAVAILABLE', message: /cannot export pin \d+ \(EBUSY\)/ }, 'a pin that cannot be exported names the pin and the reason')
  await first.close()
})
