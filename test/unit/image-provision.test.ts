import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { initFleet } from '../../node/identity/fleet.ts'
import { initNodeDir } from '../../node/identity/node-dir.ts'
import { readEnrollFile } from '../../node/identity/first-boot.ts'
import { provisionNodeDir } from '../../node/identity/provision.ts'
import { CLI } from '../helpers/cluster.ts'
import { exec } from '../helpers/processes.ts'

const work = await mkdtemp(join(tmpdir(), 'gatemesh-provision-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })
const fleet = join(work, 'fleet')
const other = join(work, 'other-fleet')
await initFleet(fleet)
await initFleet(other)
const TOKEN = 'gmj_abcdefghijklmnop.' + 'x'.repeat(43)

const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777

t.test('mint: a fresh identity signed by the fleet, image defaults in config.json', async t => {
  const dir = join(work, 'mint')
  const p = await provisionNodeDir(dir, { mode: 'mint', fleetDir: fleet, role: 'gateway', labels: { site: 'a' }, bootstrap: [] })
  t.match(p, { mode: 'baked', role: 'gateway', labels: { site: 'a' }, peerId: /^12D3KooW/ })
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'))
  t.same(config.listen, ['/ip4/0.0.0.0/tcp/7400'], 'listens on the LAN')
  t.same(config.api, { host: '127.0.0.1', port: 7401 }, 'API on loopback only')
  for (const f of ['peer.key', 'network.key', 'api.token', 'config.json']) t.equal(await mode(join(dir, f)), 0o600, `${f} is 0600`)
})

t.test('copy: an existing node directory, checked against the fleet', async t => {
  const src = join(work, 'existing')
  const { peerId } = await initNodeDir(src, { fleetDir: fleet, role: 'server', labels: { rack: '4' } })
  const dir = join(work, 'copied')
  const p = await provisionNodeDir(dir, { mode: 'copy', fleetDir: fleet, nodeDir: src, bootstrap: ['/ip4/10.0.0.1/tcp/7400/p2p/' + peerId] })
  t.match(p, { mode: 'baked', peerId, role: 'server', labels: { rack: '4' } })
  t.same((await readdir(dir)).sort(), ['api.token', 'config.json', 'fleet.pub', 'network.key', 'node.cert', 'peer.key'])
  for (const f of ['peer.key', 'network.key', 'api.token', 'config.json']) t.equal(await mode(join(dir, f)), 0o600, `${f} is 0600`)
  t.not(await readFile(join(dir, 'api.token'), 'utf8'), await readFile(join(src, 'api.token'), 'utf8'), 'the image gets a token of its own')
  t.same(JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')).bootstrap, ['/ip4/10.0.0.1/tcp/7400/p2p/' + peerId], '--bootstrap replaces the bootstrap list')
  await t.rejects(provisionNodeDir(join(work, 'copied-2'), { mode: 'copy', fleetDir: other, nodeDir: src }), { code: 'ERR_CONFIG', field: '--node-dir', message: /not a valid certificate of the fleet/ }, 'another fleet\'s node directory is refused')
})

t.test('enroll: a 0600 join token, the pinned fleet key, no identity', async t => {
  const dir = join(work, 'enroll')
  const p = await provisionNodeDir(dir, { mode: 'enroll', fleetDir: fleet, coordinator: 'https://coordinator.example:8443', token: TOKEN, role: 'gateway', labels: {} })
  t.match(p, { mode: 'enroll', coordinator: 'https://coordinator.example:8443' })
  t.same((await readdir(dir)).sort(), ['api.token', 'config.json', 'enroll.json', 'fleet.pub'])
  for (const f of ['enroll.json', 'api.token', 'config.json']) t.equal(await mode(join(dir, f)), 0o600, `${f} is 0600`)
  t.match(await readEnrollFile(dir), { coordinator: 'https://coordinator.example:8443/', token: TOKEN, role: 'gateway' })
  await t.rejects(provisionNodeDir(join(work, 'enroll-2'), { mode: 'enroll', fleetDir: fleet, coordinator: 'http://10.1.2.3:8080', token: TOKEN, role: 'gateway', labels: {} }), { code: 'ERR_CONFIG', field: '--enroll-url', message: /use https/ }, 'plain http to another host carries the network key in the clear')
  await t.rejects(provisionNodeDir(join(work, 'enroll-3'), { mode: 'enroll', fleetDir: fleet, coordinator: 'https://c.example', token: 'hunter2', role: 'gateway', labels: {} }), { code: 'ERR_CONFIG', field: '--token' })
})

t.test('gatemesh image build refuses bad flags before building anything (exit 2, naming the flag)', async t => {
  const out = join(work, 'never.tar.gz')
  const cases: Array<[string[], RegExp]> = [
    [['--arch', 'armv7', '--fleet', fleet, '--out', out], /--arch: "armv7" must be x64 or arm64 .*no armv7 images/],
    [['--fleet', fleet, '--out', out], /missing --arch/],
    [['--arch', 'x64', '--fleet', fleet, '--out', out, '--enroll-url', 'https://c.example'], /--enroll-url and --token go together/],
    [['--arch', 'x64', '--fleet', fleet, '--out', out, '--node-dir', join(work, 'existing'), '--role', 'server'], /--role and --labels come from the certificate/],
    [['--arch', 'x64', '--fleet', fleet, '--out', out, '--role', 'toaster'], /config\.role: "toaster" must be one of/],
    [['--arch', 'x64', '--fleet', fleet, '--out', out, '--labels', 'nokey'], /config\.labels: "nokey" is not key=value/],
    [['--arch', 'x64', '--fleet', fleet, '--out', out, '--enroll-url', 'https://c.example', '--token', 'nope'], /--token: not a join token/]
  ]
  for (const [args, message] of cases) {
    const err = await exec(process.execPath, [CLI, 'image', 'build', ...args]).then(() => null, (e: any) => e)
    t.equal(err?.code, 2, `exit 2: ${args.join(' ')}`)
    t.match(err?.stderr, message)
  }
  await t.rejects(stat(out), 'no archive written')
})
