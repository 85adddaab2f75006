import { access, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { freePort } from '../helpers/ports.ts'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'
import { buildImageCli, startImageAgent, unpackImage } from '../helpers/image.ts'
import type { TestProcess } from '../helpers/processes.ts'

// an agent mesh, a coordinator that is down when the device first boots, and an image with a join token
const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
const devices: TestProcess[] = []
const startDevice = async (deviceRoot: string, log: string): Promise<TestProcess> => {
  const p = await startImageAgent(deviceRoot, { log: join(cluster.root, log) })
  devices.push(p)
  return p
}
t.teardown(async () => {
  await Promise.all(devices.map(async p => await p.stop()))
  await coordinator.stop()
  await cluster.close()
})
await cluster.addNode('a', { role: 'server' })
await cluster.start('a')
coordinator.init.bootstrap = [cluster.node('a').multiaddr]
await coordinator.start()
const admin = await coordinator.login('admin', coordinator.printedPassword()!)
const created = await coordinator.request('POST', '/api/v1/enrollments', { token: admin, body: { role: 'gateway', labels: { site: 'field' } } })
if (created.status !== 201) throw new Error(`making a join token failed: ${created.status} ${created.text}`)
const joinToken: string = created.body.token
await coordinator.stop()

const overrides = join(cluster.root, 'device-config.json')
await writeFile(overrides, JSON.stringify({ listen: [`/ip4/127.0.0.1/tcp/${await freePort()}`], api: { host: '127.0.0.1', port: await freePort() }, logs: { stdout: false } }))
const archive = join(cluster.root, 'gatemesh-enroll.tar.gz')
const root = join(cluster.root, 'device-root')
const data = join(root, 'var/lib/gatemesh')
const logLines = async (dir: string): Promise<any[]> => (await readFile(join(dir, 'logs/agent.log'), 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map(l => JSON.parse(l))

await t.test('an enrollment image carries a join token instead of an identity', async t => {
  const { stdout } = await buildImageCli(['--arch', 'x64', '--fleet', cluster.fleetDir, '--out', archive, '--enroll-url', coordinator.url, '--token', joinToken, '--config', overrides])
  t.match(stdout, new RegExp(`identity {2}none yet: enrolls with ${coordinator.url.replace(/[.]/g, '\\.')} on first boot as gateway`))
  t.notOk(stdout.includes(joinToken), 'the token is not printed')
  await unpackImage(archive, root)
  t.equal((await stat(join(data, 'enroll.json'))).mode & 0o777, 0o600, 'enroll.json is 0600')
  await t.rejects(access(join(data, 'node.cert')), 'no certificate yet')
  await t.rejects(access(join(data, 'peer.key')), 'no identity yet: the device makes its own key')
})

let agent: TestProcess
await t.test('first boot with the coordinator down: the agent retries with backoff and says why', async t => {
  agent = await startDevice(root, 'device.log')
  const retries = await waitFor(async () => {
    const lines = (await logLines(data)).filter(l => l.msg === 'coordinator not reachable; retrying enrollment')
    return lines.length >= 3 ? lines : null
  }, 'three retries logged', 60_000, 250)
  t.match(retries[0], { level: 'warn', service: 'enroll', attempt: 1, reason: /ECONNREFUSED/ }, 'the reason is in the log')
  t.ok(retries[2].retryInMs > retries[0].retryInMs, `backoff grows (${retries.map(r => r.retryInMs).join(' → ')} ms)`)
  t.ok(agent.running, 'the agent keeps waiting')
  await t.rejects(access(join(data, 'node.cert')), 'still no certificate')
})

await t.test('once the coordinator is up, the device enrolls, stores its certificate, deletes the token and joins', async t => {
  await coordinator.start()
  await waitFor(async () => { await access(join(data, 'node.cert')); return true }, 'the certificate to be stored', 90_000, 250)
  await waitFor(async () => await access(join(data, 'enroll.json')).then(() => false, () => true), 'the token to be deleted', 10_000)
  t.pass('node.cert stored, enroll.json deleted')
  const runtime = await waitFor(async () => JSON.parse(await readFile(join(data, 'agent.json'), 'utf8')), 'the agent to start', 60_000)
  await waitFor(async () => (await cluster.members('a')).get(runtime.peerId)?.state === 'alive', 'a to see the enrolled device alive', 60_000)
  const member = (await cluster.members('a')).get(runtime.peerId) as any
  t.match(member, { role: 'gateway', state: 'alive', labels: { site: 'field' } }, 'the enrolled device is a live gateway in the mesh, with the token\'s labels')
  const log = await readFile(join(data, 'logs/agent.log'), 'utf8')
  t.notOk(log.includes(joinToken) || log.includes(joinToken.split('.')[1]!), 'the token never reached a log line')
  t.ok((await logLines(data)).some(l => l.msg === 'enrolled: certificate stored, join token deleted'), 'enrollment logged')
})

await t.test('a restart runs the enrolled node without the token', async t => {
  const before = JSON.parse(await readFile(join(data, 'agent.json'), 'utf8')).peerId
  await agent.stop()
  agent = await startDevice(root, 'device.log')
  await sleep(500)
  const runtime = await waitFor(async () => {
    const r = JSON.parse(await readFile(join(data, 'agent.json'), 'utf8'))
    return r.pid === agent.pid ? r : null
  }, 'the agent to start again', 60_000)
  t.equal(runtime.peerId, before, 'same identity')
  t.equal((await logLines(data)).filter(l => l.msg === 'first boot: enrolling with the coordinator').length, 1, 'enrolled once, never again')
})

await t.test('a second device from the same image is refused (the token is spent) and stops for good', async t => {
  const root2 = join(cluster.root, 'device-root-2')
  await unpackImage(archive, root2)
  const second = await startDevice(root2, 'device-2.log')
  const { code } = await second.exited
  t.equal(code, 2, 'exit status 2, which the unit does not restart (RestartPreventExitStatus=2)')
  const refused = (await logLines(join(root2, 'var/lib/gatemesh'))).find(l => l.msg === 'enrollment refused: this device needs a new join token')
  t.match(refused, { level: 'error', reason: /already used/ })
  await t.rejects(access(join(root2, 'var/lib/gatemesh/node.cert')), 'no certificate')
})
