import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { REPO_ROOT } from '../../packaging/app-bundle.ts'
import { bundleCommand } from '../helpers/app-bundle.ts'
import { Cluster, sleep, waitFor, type ClusterNode } from '../helpers/cluster.ts'
import { budget } from '../helpers/budget.ts'
import { run } from '../helpers/processes.ts'
import { flashedDevice, releaseZip as makeRelease } from '../helpers/release-device.ts'
import type { UnitSupervisor } from '../helpers/unit-supervisor.ts'

/**
 * Rollouts with no controller, as on devices: three agents run from an
 * x64 image layout in scratch roots (the image's loader and unit, run by a
 * stand-in for systemd; each release on the Node runtime it links to), a
 * fourth plain agent publishes the releases, and no coordinator runs.
 * Releases are real fleet-signed release bundles of this repository's app;
 * their app resolves its external modules from the repository's
 * node_modules (the roots live under the repository) instead of carrying
 * them, which keeps each bundle a few MB. Every command is the CLI's.
 */
const cluster = await Cluster.create()
const work = await mkdtemp(join(REPO_ROOT, 'dist', 'rollout-test-'))
t.teardown(async () => {
  await cluster.close()
  if (process.env.GATEMESH_KEEP_TEST_DIRS == null) await rm(work, { recursive: true, force: true })
})
const fleet = await loadFleet(cluster.fleetDir)

const signer = { key: fleet.privateKey }
const releaseZip = async (version: string, options: { app?: string, fleetDir?: string } = {}): Promise<{ file: string, digest: string }> =>
  await makeRelease(work, version, options.fleetDir == null ? signer : { key: (await loadFleet(options.fleetDir)).privateKey }, {
    ...(options.app == null ? {} : { app: options.app }),
    ...(options.fleetDir == null ? {} : { name: `${version}-foreign` })
  })

// the CLI as shipped (the app bundle): it starts in a fraction of the time the TypeScript sources take
const cli = await bundleCommand()
const gatemesh = async (...args: string[]): Promise<string> => (await run(cli.exec, [...cli.args, ...args], { timeoutMs: budget(60_000) })).stdout

interface Device { node: ClusterNode, root: string, releases: string, unit: UnitSupervisor }

const v1 = await releaseZip('1.0.0')
const v11 = await releaseZip('1.1.0')
const bad = await releaseZip('1.2.0', { app: 'console.error("1.2.0 cannot start"); process.exit(1)\n' })

await cluster.addNode('seed', { role: 'server' })
await cluster.start('seed')

/** A device as `gatemesh flash` leaves it (image loader and unit, release 1.0.0 current), its data dir a node of the fleet. */
async function device (name: string): Promise<Device> {
  const node = await cluster.addNode(name, { bootstrap: ['seed'] })
  const d = await flashedDevice(join(work, name), { dataDir: node.dir, first: { file: v1.file, version: '1.0.0' }, fleetPublicKey: fleet.publicKey })
  t.teardown(async () => { await d.unit.stop() })
  return { node, ...d }
}

const devices = await Promise.all(['d1', 'd2', 'd3'].map(device))
const byPeer = new Map(devices.map(d => [d.node.peerId, d]))

interface NodeRelease { record: { version: string, state: string, managed: boolean, rollout?: string, detail?: string, healthyAt?: number, previous?: string }, history: Array<{ result: string, to: string }> }
const release = async (d: Device): Promise<NodeRelease> => await cluster.get<NodeRelease>(d.node.name, '/v1/release')
const unitLog = async (d: Device): Promise<string> => await readFile(d.unit.log, 'utf8').catch(() => '')
/** The rollout's order of nodes, from its definition: sha256(id \n peer), ascending. */
const order = (id: string): Device[] => [...devices].sort((a, b) => {
  const x = createHash('sha256').update(`${id}\n${a.node.peerId}`).digest('hex')
  const y = createHash('sha256').update(`${id}\n${b.node.peerId}`).digest('hex')
  return x < y ? -1 : 1
})
const status = async (id: string, via = 'seed'): Promise<any> => JSON.parse(await gatemesh('rollout', 'status', id, '--data', cluster.node(via).dir, '--json'))
/** `rollout create` through an agent, once the agent has heard that the release is held in the mesh. */
async function create (via: string, args: string[]): Promise<void> {
  await waitFor(async () => {
    try {
      await gatemesh('rollout', 'create', ...args, '--fleet', cluster.fleetDir, '--data', cluster.node(via).dir)
      return true
    } catch (err: any) {
      if (/no node of the mesh holds/.test(err.stderr ?? '')) return false
      throw err
    }
  }, `rollout create through ${via}`, 30_000, 500)
}

await t.test('devices start 1.0.0 from the image layout through the loader and report it', async t => {
  for (const d of devices) d.unit.start()
  for (const d of devices) {
    await waitFor(async () => (await release(d)).record.managed, `${d.node.name} to report its release`, 60_000, 500)
    const r = await release(d)
    t.equal(r.record.version, '1.0.0', `${d.node.name} runs 1.0.0`)
    t.ok(r.record.managed, `${d.node.name} is managed: its loader can switch and roll back`)
  }
  const seed = await cluster.get<NodeRelease>('seed', '/v1/release')
  t.notOk(seed.record.managed, 'an agent not started by a loader says it cannot take releases')
})

await t.test('a tampered or foreign-signed release is refused before it is stored or unpacked', async t => {
  const tampered = join(work, 'tampered.zip')
  const bytes = await readFile(v11.file)
  const at = Math.floor(bytes.length / 2)
  bytes[at] = bytes[at]! ^ 0xff
  await writeFile(tampered, bytes)
  await t.rejects(gatemesh('release', 'publish', tampered, '--data', cluster.node('d1').dir), 'publishing a tampered release fails')
  const other = join(work, 'other-fleet')
  await initFleet(other)
  const foreign = await releaseZip('1.1.1', { fleetDir: other })
  const err = await gatemesh('release', 'publish', foreign.file, '--data', cluster.node('d1').dir).then(() => '', (e: any) => String(e.stderr))
  t.match(err, /sign|fleet/i, `a release signed by another fleet is refused: ${err.trim().split('\n').pop()}`)
  const listed = JSON.parse(await gatemesh('release', 'list', '--data', cluster.node('d1').dir, '--json'))
  t.same(listed, [], 'nothing was stored')
  const rejected = await cluster.request('d1', 'PUT', '/v1/rollouts/r-foreign', { rollout: { id: 'r-foreign' }, auth: 'x'.repeat(20) })
  t.equal(rejected.status, 400, 'a malformed rollout record is refused, naming the field')
  t.match(rejected.body.message, /body\.rollout/)
  const anonymous = await cluster.request('d1', 'PUT', '/v1/rollouts/r-foreign', { rollout: { id: 'r-foreign' }, auth: 'x'.repeat(20) }, { anonymous: true })
  t.equal(anonymous.status, 401, 'writing a rollout needs the node\'s API token')
  for (const d of devices) t.same((await readdir(d.releases)).filter(n => /^\d/.test(n)), ['1.0.0'], `${d.node.name} unpacked nothing`)
})

await t.test('a rollout moves the fleet wave by wave with no coordinator; a node that was offline catches up', async t => {
  await gatemesh('release', 'publish', v11.file, '--data', cluster.node('seed').dir)
  const [w1, w2, w3] = order('r1') as [Device, Device, Device]
  // the last wave's node is down before the rollout starts, and known dead
  await w3.unit.stop()
  await waitFor(async () => (await cluster.members('seed')).get(w3.node.peerId)?.state === 'dead', `${w3.node.name} to be seen dead`, 90_000, 500)
  await create('seed', [v11.file, '--id', 'r1', '--waves', '33%,66%,100%', '--health-deadline', '120'])
  await waitFor(async () => (await release(w1)).record.state === 'healthy' && (await release(w1)).record.version === '1.1.0', `${w1.node.name} (wave 1) healthy on 1.1.0`, 120_000, 500)
  await waitFor(async () => (await release(w2)).record.state === 'healthy' && (await release(w2)).record.version === '1.1.0', `${w2.node.name} (wave 2) healthy on 1.1.0`, 120_000, 500)
  const first = await release(w1)
  const restartOfW2 = w2.unit.runs.at(-1)!.startedAt
  t.ok(restartOfW2 >= first.record.healthyAt!, `wave 2 restarted into 1.1.0 (${new Date(restartOfW2).toISOString()}) only after wave 1 proved healthy (${new Date(first.record.healthyAt!).toISOString()})`)
  t.equal(await readlink(join(w1.releases, 'current')), '1.1.0', 'current links to the new release')
  t.equal(await readlink(join(w1.releases, 'previous')), '1.0.0', 'previous to the one it replaced')
  t.match(await unitLog(w1), /switched from 1\.0\.0 to 1\.1\.0/, 'the loader switched')
  const mid = await status('r1')
  t.equal(mid.phase, 'active', 'the rollout waits for the offline node')
  t.same(mid.targets.map((x: any) => [byPeer.get(x.peer)!.node.name, x.outcome]), [[w1.node.name, 'done'], [w2.node.name, 'done'], [w3.node.name, 'offline']], 'two done, the stopped one offline')
  t.same((await readdir(w3.releases)).filter(n => /^\d/.test(n)), ['1.0.0'], 'the stopped node has nothing new yet')
  // back online: it finds the rollout in the registry and catches up
  w3.unit.start()
  await waitFor(async () => { const r = await release(w3); return r.record.version === '1.1.0' && r.record.state === 'healthy' }, `${w3.node.name} to catch up`, 180_000, 500)
  await waitFor(async () => (await status('r1', w2.node.name)).phase === 'done', 'the rollout to be done, as any node sees it', 30_000, 500)
  const text = await gatemesh('rollout', 'status', 'r1', '--data', cluster.node('seed').dir)
  t.match(text, /rollout r1: 1\.1\.0, done/, `status reads:\n${text}`)
})

await t.test('a release that fails its health check rolls back on the first node; the rollout halts and no other node installs it', async t => {
  await gatemesh('release', 'publish', bad.file, '--data', cluster.node('seed').dir)
  const [first, ...rest] = order('r2') as [Device, Device, Device]
  await create(rest[0]!.node.name, [bad.file, '--id', 'r2', '--waves', '33%,66%,100%', '--max-failures', '0', '--health-deadline', '120'])
  await waitFor(async () => { try { return (await release(first)).record.state === 'rolled-back' } catch { return false } }, `${first.node.name} to roll back`, 180_000, 500)
  const r = await release(first)
  t.equal(r.record.version, '1.1.0', 'it runs the previous release again')
  t.match(r.record.detail, /rolled back from 1\.2\.0 to 1\.1\.0: it did not start/, `it says why: ${r.record.detail}`)
  t.equal(await readlink(join(first.releases, 'current')), '1.1.0', 'current links back')
  t.ok(r.history.some(h => h.result === 'rolled-back' && h.to === '1.2.0'), 'its history has the rollback')
  const s = await waitFor(async () => { const x = await status('r2'); return x.phase === 'halted' ? x : undefined }, 'the rollout to halt', 30_000, 500)
  t.equal(s.failures, 1)
  // the others had time to move, had the rollout let them
  await sleep(budget(10_000))
  for (const d of rest) {
    const other = await release(d)
    t.equal(other.record.version, '1.1.0', `${d.node.name} still runs 1.1.0`)
    t.notOk((await readdir(d.releases)).includes('1.2.0'), `${d.node.name} never unpacked 1.2.0`)
    t.equal((await cluster.request(d.node.name, 'GET', `/v1/bundles/${bad.digest}`)).status, 404, `${d.node.name} never pulled it`)
  }
  await gatemesh('rollout', 'abort', 'r2', '--fleet', cluster.fleetDir, '--data', cluster.node('seed').dir)
  await waitFor(async () => (await status('r2', rest[1]!.node.name)).phase === 'aborted', 'the abort to reach every node', 30_000, 500)
  t.pass('aborted, as every node sees it')
})

await t.test('a downgrade needs --allow-downgrade', async t => {
  await gatemesh('release', 'publish', v1.file, '--data', cluster.node('seed').dir)
  const err = await waitFor(async () => {
    const e = await gatemesh('rollout', 'create', v1.file, '--fleet', cluster.fleetDir, '--data', cluster.node('seed').dir).then(() => 'created', (e: any) => String(e.stderr))
    return /no node of the mesh holds/.test(e) ? undefined : e
  }, 'the published release to be known', 30_000, 500)
  t.match(err, /allowDowngrade.*newer release than 1\.0\.0/, `refused: ${err.trim()}`)
})
