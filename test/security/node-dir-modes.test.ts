import { chmod, mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { initFleet } from '../../node/identity/fleet.ts'
import { SECRET_FILES, tightenSecretModes } from '../../node/identity/node-dir.ts'
import { provisionNodeDir } from '../../node/identity/provision.ts'
import { CLI } from '../helpers/cluster.ts'
import { exec } from '../helpers/processes.ts'
import { httpClient, PASSWORDS, testCoordinator } from '../helpers/coordinator-app.ts'

// Issue 14, item 10: "gatemesh node init, enroll and images write config.json
// 0600". Every file of a node directory that holds a secret must be 0600,
// however the directory was made; the rest may be read by others.

const work = await mkdtemp(join(tmpdir(), 'gatemesh-modes-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })
const fleet = join(work, 'fleet')
await initFleet(fleet)
/** files anyone may read: certificates and public keys */
const PUBLIC = new Set(['node.cert', 'fleet.pub'])

async function checkModes (t: Test, dir: string, expected: string[]): Promise<void> {
  const files = (await readdir(dir)).sort()
  t.same(files, [...expected].sort(), `${dir.slice(work.length)} holds ${files.join(', ')}`)
  for (const f of files) {
    const mode = (await stat(join(dir, f))).mode & 0o777
    if (PUBLIC.has(f)) continue
    t.ok((SECRET_FILES as readonly string[]).includes(f), `${f} is a known secret file`)
    t.equal(mode, 0o600, `${f} is 0600 (${mode.toString(8)})`)
  }
  t.equal((await stat(dir)).mode & 0o777, 0o700, 'and the directory is 0700')
}

t.test('gatemesh node init', async t => {
  const dir = join(work, 'init')
  await exec(process.execPath, [CLI, 'node', 'init', dir, '--fleet', fleet, '--role', 'gateway', '--api-port', '0'])
  await checkModes(t, dir, ['api.token', 'config.json', 'fleet.pub', 'network.key', 'node.cert', 'peer.key'])
})

t.test('gatemesh enroll', async t => {
  const coordinator = await testCoordinator()
  t.teardown(coordinator.close)
  const http = await httpClient(coordinator.app)
  const admin = (await http.request('POST', '/api/v1/auth/login', { body: { username: 'admin', password: PASSWORDS.admin } })).body.token
  const created = await http.request('POST', '/api/v1/enrollments', { token: admin, body: { role: 'gateway' } })
  t.equal(created.status, 201)
  const dir = join(work, 'enrolled')
  await exec(process.execPath, [CLI, 'enroll', '--coordinator', http.base!, '--token', created.body.token, '--data', dir, '--api-port', '0'])
  await checkModes(t, dir, ['api.token', 'config.json', 'fleet.pub', 'network.key', 'node.cert', 'peer.key'])
})

t.test('images: baked, copied and enrolling node directories', async t => {
  const minted = join(work, 'image-mint')
  await provisionNodeDir(minted, { mode: 'mint', fleetDir: fleet, role: 'gateway', labels: {} })
  await checkModes(t, minted, ['api.token', 'config.json', 'fleet.pub', 'network.key', 'node.cert', 'peer.key'])
  const copied = join(work, 'image-copy')
  await provisionNodeDir(copied, { mode: 'copy', fleetDir: fleet, nodeDir: join(work, 'init') })
  await checkModes(t, copied, ['api.token', 'config.json', 'fleet.pub', 'network.key', 'node.cert', 'peer.key'])
  const enrolling = join(work, 'image-enroll')
  await provisionNodeDir(enrolling, { mode: 'enroll', fleetDir: fleet, coordinator: 'https://coordinator.example', token: 'gmj_abcdefghijklmnop.' + 'x'.repeat(43), role: 'gateway', labels: {} })
  await checkModes(t, enrolling, ['api.token', 'config.json', 'enroll.json', 'fleet.pub'])
})

t.test('a secret file made readable by hand is narrowed again by the agent', async t => {
  const dir = join(work, 'init')
  await chmod(join(dir, 'config.json'), 0o644)
  await chmod(join(dir, 'api.token'), 0o640)
  const fixed = await tightenSecretModes(dir)
  t.same(fixed, [{ file: 'api.token', mode: '0640' }, { file: 'config.json', mode: '0644' }].sort((a, b) => SECRET_FILES.indexOf(a.file as any) - SECRET_FILES.indexOf(b.file as any)), 'and says which')
  await checkModes(t, dir, ['api.token', 'config.json', 'fleet.pub', 'network.key', 'node.cert', 'peer.key'])
})
