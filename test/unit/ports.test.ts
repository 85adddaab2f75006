import { rm, utimes } from 'node:fs/promises'
import t from 'tap'
import { freePort, reserve } from '../helpers/ports.ts'

const RESERVED = '/tmp/gatemesh-ports'

t.test('a port picked by one test process is not handed out again while its hold lasts', async t => {
  const port = await freePort()
  t.teardown(async () => { await rm(`${RESERVED}/${port}`, { force: true }) })
  t.equal(await reserve(port), false, 'the port freePort returned is reserved')
  const old = new Date(Date.now() - 41 * 60_000)
  await utimes(`${RESERVED}/${port}`, old, old)
  t.equal(await reserve(port), true, 'a reservation older than the hold is taken over')
  t.equal(await reserve(port), false, 'and held again')
})

t.test('many picks in one process are all different', async t => {
  const ports = await Promise.all(Array.from({ length: 50 }, async () => await freePort()))
  t.teardown(async () => { await Promise.all(ports.map(async p => await rm(`${RESERVED}/${p}`, { force: true }))) })
  t.equal(new Set(ports).size, ports.length)
})
