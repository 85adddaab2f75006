import { mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { agentUnit, AGENT_UNIT, loader, RESTART_EXIT_CODE } from '../../packaging/image/layout.ts'
import { waitFor } from '../helpers/cluster.ts'
import { UnitSupervisor } from '../helpers/unit-supervisor.ts'

/**
 * The loader and the unit's restart rules together, as on a device: the
 * image's own loader script and unit file in a scratch root, run by a
 * stand-in for systemd, with releases whose "agent" is a small script that
 * behaves as each test tells it (starts and stays up, confirms its health,
 * crashes at start, hangs, stages the next release).
 */
const work = await mkdtemp(join(tmpdir(), 'gatemesh-loader-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })

const FAKE_AGENT = `
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
const version = process.env.GATEMESH_RELEASE
const data = process.argv[process.argv.indexOf('--data') + 1]
const behaviours = JSON.parse(readFileSync(data + '/behaviour.json', 'utf8'))
let b = behaviours[version] ?? 'run'
// a release stages the next one once, then runs
if (b.startsWith('stage:') && existsSync(data + '/staged-' + b.split(':')[1])) b = 'run'
appendFileSync(data + '/starts.log', version + ' ' + b + ' ' + (process.env.GATEMESH_LOADER ?? '-') + '\\n')
const stay = () => { setInterval(() => {}, 1000); process.on('SIGTERM', () => process.exit(0)) }
if (b === 'run') stay()
else if (b === 'confirm') { setTimeout(() => { writeFileSync(data + '/release/health', 'note=all good\\n'); rmSync(data + '/release/pending', { force: true }) }, 500); stay() }
else if (b === 'crash') process.exit(1)
else if (b === 'exit2') process.exit(2)
else if (b === 'hang') { writeFileSync(data + '/release/health', 'note=no peer alive yet\\n'); stay() }
else if (b.startsWith('stage:')) {
  const [, next, deadline] = b.split(':')
  writeFileSync(data + '/staged-' + next, '')
  writeFileSync(data + '/release/next', 'version=' + next + '\\ndeadline=' + deadline + '\\nrollout=r-1\\n')
  process.exit(${RESTART_EXIT_CODE})
}
`

interface Device { root: string, data: string, releases: string, unit: UnitSupervisor }

async function device (name: string, versions: string[]): Promise<Device> {
  const root = join(work, name)
  const releases = join(root, 'opt/gatemesh/releases')
  const data = join(root, 'var/lib/gatemesh')
  await mkdir(join(releases, 'runtimes/22.0.0/bin'), { recursive: true })
  await symlink(process.execPath, join(releases, 'runtimes/22.0.0/bin/node'))
  for (const v of versions) {
    await mkdir(join(releases, v, 'app'), { recursive: true })
    await writeFile(join(releases, v, 'app/gatemesh.mjs'), FAKE_AGENT)
    await writeFile(join(releases, v, 'release.json'), JSON.stringify({ version: v, node: '22.0.0' }))
    await symlink('../runtimes/22.0.0', join(releases, v, 'node'))
  }
  await symlink(versions[0]!, join(releases, 'current'))
  await mkdir(join(root, 'opt/gatemesh/bin'), { recursive: true })
  await writeFile(join(root, 'opt/gatemesh/bin/gatemesh-loader'), loader(), { mode: 0o755 })
  await mkdir(join(root, 'etc/systemd/system'), { recursive: true })
  await writeFile(join(root, 'etc/systemd/system', AGENT_UNIT), agentUnit({ version: versions[0]!, arch: 'x64' }))
  await mkdir(data, { recursive: true })
  const unit = await UnitSupervisor.fromRoot(root, AGENT_UNIT, { log: join(root, 'unit.log') })
  t.teardown(async () => { await unit.stop() })
  return { root, data, releases, unit }
}

const behave = async (d: Device, b: Record<string, string>): Promise<void> => { await writeFile(join(d.data, 'behaviour.json'), JSON.stringify(b)) }
const starts = async (d: Device): Promise<string[]> => (await readFile(join(d.data, 'starts.log'), 'utf8').catch(() => '')).trim().split('\n').filter(l => l !== '')
const current = async (d: Device): Promise<string> => await readlink(join(d.releases, 'current'))
const stateFile = async (d: Device, name: string): Promise<Record<string, string> | undefined> => {
  const text = await readFile(join(d.data, 'release', name), 'utf8').catch(() => undefined)
  return text == null ? undefined : Object.fromEntries(text.trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
}

await t.test('the unit starts the current release through the loader, with nothing in between', async t => {
  const d = await device('plain', ['0.1.0'])
  await behave(d, {})
  d.unit.start()
  await waitFor(async () => (await starts(d)).length === 1, 'the agent to start')
  t.same(await starts(d), ['0.1.0 run 1'], 'the current release runs, told it runs under the loader')
  const exe = await readlink(`/proc/${d.unit.pid!}/exe`)
  t.equal(exe, process.execPath, 'the loader exec\'d the release\'s node: no shell stays around')
  t.same(d.unit.unit.privilegedPre, ['+/bin/chown -R -h gatemesh:gatemesh /opt/gatemesh/releases'], 'the unit hands the releases to the service user (skipped here: no such user in a scratch root)')
  await d.unit.stop()
  t.equal(d.unit.runs.length, 1, 'a clean stop is not restarted')
})

await t.test('a staged release: exit 100 restarts into it, its health check confirms it, and it stays', async t => {
  const d = await device('upgrade', ['0.1.0', '0.2.0'])
  await behave(d, { '0.1.0': 'stage:0.2.0:60', '0.2.0': 'confirm' })
  d.unit.start()
  await waitFor(async () => await stateFile(d, 'pending') == null && (await starts(d)).length === 2, 'the new release to confirm itself', 30_000)
  t.equal(d.unit.runs[0]!.code, RESTART_EXIT_CODE)
  t.equal(await current(d), '0.2.0')
  t.equal(await readlink(join(d.releases, 'previous')), '0.1.0', 'previous names the release to go back to')
  t.equal(await stateFile(d, 'next'), undefined, 'the staged marker is consumed')
  t.equal(await stateFile(d, 'rollback'), undefined)
  await waitFor(() => d.unit.running, 'the new release to keep running')
  await new Promise(resolve => setTimeout(resolve, 2000))
  t.ok(d.unit.running, 'confirmed: the loader no longer stops it')
  t.equal(d.unit.runs.length, 2)
})

await t.test('a release that exits at start is given up after three starts; the previous one runs again and the reason is kept', async t => {
  const d = await device('crash', ['0.1.0', '0.3.0'])
  await behave(d, { '0.1.0': 'stage:0.3.0:300', '0.3.0': 'crash' })
  d.unit.start()
  const rollback = await waitFor(async () => await stateFile(d, 'rollback'), 'the loader to roll back', 90_000)
  t.match(rollback, { version: '0.3.0', previous: '0.1.0', rollout: 'r-1', reason: /did not start: exited 3 times before its health check passed \(last status 1\)/ })
  t.equal(await current(d), '0.1.0')
  await waitFor(async () => (await starts(d)).at(-1) === '0.1.0 run 1', 'the previous release to run again', 30_000)
  t.same((await starts(d)).map(l => l.split(' ').slice(0, 2).join(' ')), ['0.1.0 stage:0.3.0:300', '0.3.0 crash', '0.3.0 crash', '0.3.0 crash', '0.1.0 run'])
  t.equal(await stateFile(d, 'pending'), undefined)
})

await t.test('a release that hangs is stopped at its deadline and rolled back, with its last health note', async t => {
  const d = await device('hang', ['0.1.0', '0.4.0'])
  await behave(d, { '0.1.0': 'stage:0.4.0:6', '0.4.0': 'hang' })
  d.unit.start()
  const rollback = await waitFor(async () => await stateFile(d, 'rollback'), 'the loader to give up on the hung release', 60_000)
  t.match(rollback, { version: '0.4.0', previous: '0.1.0', reason: 'not healthy within 6s (last health check: no peer alive yet)' })
  t.equal(await current(d), '0.1.0')
  await waitFor(async () => (await starts(d)).length === 3 && d.unit.running, 'the previous release to start again', 30_000)
  t.equal((await starts(d))[2], '0.1.0 run 1', 'the unit restarted the loader into the previous release')
})

await t.test('a release that exits 2 (configuration it cannot read) goes back at once, though the unit never restarts a 2', async t => {
  const d = await device('exit2', ['0.1.0', '0.5.0'])
  await behave(d, { '0.1.0': 'stage:0.5.0:300', '0.5.0': 'exit2' })
  d.unit.start()
  const rollback = await waitFor(async () => await stateFile(d, 'rollback'), 'the loader to roll back', 60_000)
  t.match(rollback, { version: '0.5.0', reason: /exited with status 2/ })
  await waitFor(async () => (await starts(d)).at(-1) === '0.1.0 run 1' && d.unit.running, 'the previous release to run', 30_000)
  t.pass('the node is back on 0.1.0 and running')
})

await t.test('stale markers are dropped: a pending release that is not current, a staged one that is not installed', async t => {
  const d = await device('stale', ['0.1.0'])
  await behave(d, {})
  await mkdir(join(d.data, 'release'), { recursive: true })
  await writeFile(join(d.data, 'release/pending'), 'version=0.9.0\nprevious=0.1.0\nattempts=0\nsince=1\ndeadline=60\nrollout=\n')
  await writeFile(join(d.data, 'release/next'), 'version=0.9.1\ndeadline=60\nrollout=r-2\n')
  d.unit.start()
  await waitFor(async () => (await starts(d)).length === 1, 'the agent to start')
  t.equal(await current(d), '0.1.0')
  t.equal(await stateFile(d, 'pending'), undefined, 'the pending marker of a release that is not current is dropped (a flash since)')
  t.equal(await stateFile(d, 'next'), undefined)
  t.match(await readFile(d.unit.log, 'utf8'), /ignored staged release '0\.9\.1'/)
})
