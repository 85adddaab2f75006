import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CoordinatorRollouts } from '../../coordinator/rollouts/service.ts'
import { ReleaseService } from '../../node/release/service.ts'
import { packRelease } from '../../packaging/release/index.ts'
import { verifyRegistryWrite } from '../../packaging/trust.ts'
import { injectClient, PASSWORDS, testCoordinator } from '../helpers/coordinator-app.ts'
import { waitFor } from '../helpers/cluster.ts'
import { fakeReleaseTree } from '../helpers/release-tree.ts'

/**
 * Rollouts through the coordinator's API, on its real services and a
 * registry mesh in memory: who may create and change them, what is
 * checked, and that what lands in the registry is a fleet-signed record the
 * gateway's registry accepts. The multi-process test
 * (test/integration/rollout.test.ts) runs rollouts on real agents.
 */
const work = await mkdtemp(join(tmpdir(), 'gm-rollouts-'))
t.teardown(async () => { await rm(work, { recursive: true, force: true }) })

// the coordinator's agent "pulls" from this shelf: release bundles by digest
const shelf = new Map<string, string>()
const pulled: string[] = []
let service: CoordinatorRollouts | undefined
const coordinator = await testCoordinator({
  rollouts: ({ member, members, logger }) => {
    const releases = new ReleaseService({
      peerId: member.peerId.toString(),
      dataDir: work,
      labels: {},
      registry: member.registry,
      members,
      claimsOf: peer => member.trust.claims.get(peer) as { role: string, labels: Record<string, string> } | undefined,
      verifiedPeers: () => 1,
      bundles: { pull: () => undefined, waitFor: async () => undefined, pathOf: d => shelf.get(d) ?? '', get: () => ({}) },
      instances: () => [],
      placedHere: () => false,
      // the coordinator's fleet exists once testCoordinator returns; nothing reads it before
      get fleetPublicKey () { return coordinator.fleet.publicKey },
      logger
    }, { loader: null })
    service = new CoordinatorRollouts({
      registry: member.registry,
      releases,
      bundles: {
        pull: d => { pulled.push(d) },
        waitFor: async d => { if (!shelf.has(d)) throw new Error('no provider has it') },
        pathOf: d => shelf.get(d)!
      },
      get signer () { return { key: coordinator.fleet.privateKey } },
      logger
    })
    return service
  }
})
t.teardown(async () => { await coordinator.close() })
const client = injectClient(coordinator.app)
const login = async (username: string, password: string): Promise<string> => (await client.request('POST', '/api/v1/auth/login', { body: { username, password } })).body.token
const [admin, dev, ops] = [await login('admin', PASSWORDS.admin), await login('dev', PASSWORDS.dev), await login('ops', PASSWORDS.ops)]

async function release (version: string): Promise<string> {
  const dir = join(work, `tree-${version}`)
  await fakeReleaseTree(dir, { version })
  const out = join(work, `r-${version}.zip`)
  const built = await packRelease({ dir, version, arch: 'x64', nodeVersion: '22.0.0', signer: { key: coordinator.fleet.privateKey }, out })
  shelf.set(built.digest, out)
  return built.digest
}
const v2 = await release('2.0.0')
const gatewayId = coordinator.gateway.peerId.toString()
// the gateway reports a managed 1.0.0, as an agent under an image's loader does
await coordinator.gateway.registry.set(`release/${gatewayId}`, { version: '1.0.0', digest: null, arch: 'x64', node: '22.0.0', managed: true, state: 'idle', at: Date.now(), startedAt: Date.now() })
await waitFor(() => coordinator.self.registry.value(`release/${gatewayId}`) != null, 'the gateway\'s release record to reach the coordinator')

t.test('only admins create and change rollouts; the nodes service reads them', async t => {
  for (const token of [dev, ops]) {
    const res = await client.request('POST', '/api/v1/rollouts', { token, body: { releases: [v2] } })
    t.equal(res.status, 403, res.body.message)
  }
  t.equal((await client.request('GET', '/api/v1/rollouts', { token: ops })).status, 200, 'an operator watches them')
  t.equal((await client.request('GET', '/api/v1/rollouts')).status, 401)
})

t.test('bad requests are refused naming the field, and nothing is written', async t => {
  const cases: Array<[unknown, string]> = [
    [{ releases: [v2], waves: [50, 40, 100] }, 'body.waves[1]'],
    [{ releases: [v2], waves: [50] }, 'body.waves'],
    [{ releases: ['f'.repeat(64)] }, 'body.releases[0]'],
    [{ releases: [v2, v2] }, 'body.releases'],
    [{ releases: [v2], healthDeadlineSec: 1 }, 'body.healthDeadlineSec'],
    [{ releases: [v2], extra: true }, 'body']
  ]
  for (const [body, field] of cases) {
    const res = await client.request('POST', '/api/v1/rollouts', { token: admin, body })
    t.equal(res.status, 400, `${JSON.stringify(body).slice(0, 60)}: ${res.body.message}`)
    t.ok(String(res.body.field ?? '').startsWith(field), `field ${String(res.body.field)}`)
  }
  t.same(coordinator.self.registry.list('rollout/'), [], 'no rollout record')
})

t.test('a rollout is pulled, signed with the fleet key and written; the gateway takes it as a target', async t => {
  const res = await client.request('POST', '/api/v1/rollouts', { token: admin, body: { id: 'r-api', releases: [v2], waves: [50, 100], maxFailures: 1, healthDeadlineSec: 60 } })
  t.equal(res.status, 201, res.body.message)
  t.equal(res.body.version, '2.0.0')
  t.same(res.body.spec.releases, [{ arch: 'x64', version: '2.0.0', digest: v2, size: res.body.spec.releases[0].size }])
  t.equal(res.body.spec.createdBy, 'admin')
  t.ok(pulled.includes(v2), 'the coordinator pulled the release before naming it')
  t.same(res.body.targets.map((x: any) => [x.peer, x.outcome]), [[gatewayId, 'waiting']], 'the gateway is a target')
  const entry = await waitFor(() => coordinator.gateway.registry.get('rollout/r-api'), 'the gateway to hold the record')
  t.ok(entry.auth != null, 'stored with its authorisation')
  await verifyRegistryWrite(entry.auth!, { key: 'rollout/r-api', valueJson: JSON.stringify(entry.value), writer: entry.writer, ts: entry.ts }, coordinator.fleet.publicKey)
  t.pass('the authorisation is the fleet key\'s, over exactly this record')
  t.equal((await client.request('POST', '/api/v1/rollouts', { token: admin, body: { id: 'r-api', releases: [v2] } })).status, 400, 'an id is used once')
})

t.test('pause, resume and abort rewrite the record; an aborted rollout stays so', async t => {
  t.equal((await client.request('PATCH', '/api/v1/rollouts/r-api', { token: dev, body: { state: 'paused' } })).status, 403)
  const budget = await client.request('PATCH', '/api/v1/rollouts/r-api', { token: admin, body: { maxFailures: 3 } })
  t.equal(budget.body.spec.maxFailures, 3, 'the failure budget can be raised')
  for (const [state, phase] of [['paused', 'paused'], ['active', 'active'], ['aborted', 'aborted']] as const) {
    const res = await client.request('PATCH', '/api/v1/rollouts/r-api', { token: admin, body: { state } })
    t.equal(res.status, 200, res.body.message)
    t.equal(res.body.phase, phase)
  }
  const again = await client.request('PATCH', '/api/v1/rollouts/r-api', { token: admin, body: { state: 'active' } })
  t.equal(again.status, 409, again.body.message)
  t.equal((await client.request('PATCH', '/api/v1/rollouts/nope', { token: admin, body: { state: 'paused' } })).status, 404)
  t.equal((await client.request('PATCH', '/api/v1/rollouts/r-api', { token: admin, body: {} })).status, 400, 'an empty change is refused')
  t.equal((await client.request('GET', '/api/v1/rollouts/r-api', { token: ops })).body.phase, 'aborted')
})

t.test('a downgrade needs allowDowngrade', async t => {
  await coordinator.gateway.registry.set(`release/${gatewayId}`, { version: '3.0.0', digest: null, arch: 'x64', node: '22.0.0', managed: true, state: 'idle', at: Date.now(), startedAt: Date.now() })
  await waitFor(() => (coordinator.self.registry.value<{ version: string }>(`release/${gatewayId}`))?.version === '3.0.0', 'the new record')
  const res = await client.request('POST', '/api/v1/rollouts', { token: admin, body: { releases: [v2] } })
  t.equal(res.status, 400)
  t.equal(res.body.field, 'body.allowDowngrade')
  t.equal((await client.request('POST', '/api/v1/rollouts', { token: admin, body: { releases: [v2], allowDowngrade: true } })).status, 201)
})

t.test('the release bundles the mesh holds, from the holders\' adverts; a change event as they and the rollouts change', async t => {
  service!.start()
  t.teardown(() => { service!.stop() })
  let changes = 0
  service!.addEventListener('change', () => { changes++ })
  const model = 'a'.repeat(64)
  const partial = 'b'.repeat(64)
  await coordinator.gateway.registry.set(`bundle/${model}/${gatewayId}`, { size: 10, complete: true, name: 'm', version: '1.0.0' })
  await coordinator.gateway.registry.set(`bundle/${partial}/${gatewayId}`, { size: 10, complete: false, kind: 'release', version: '9.0.0' })
  await coordinator.gateway.registry.set(`bundle/${v2}/${gatewayId}`, { size: 4321, complete: true, kind: 'release', version: '2.0.0' })
  await waitFor(() => coordinator.self.registry.value(`bundle/${v2}/${gatewayId}`) != null, 'the advert to reach the coordinator')
  await waitFor(() => changes > 0, 'a change event')
  for (const token of [ops, dev, admin]) {
    const res = await client.request('GET', '/api/v1/releases', { token })
    t.equal(res.status, 200)
    t.same(res.body.releases.map((r: any) => r.digest), [v2], 'complete release bundles only: no model, no partial copy')
  }
  const [listed] = (await client.request('GET', '/api/v1/releases', { token: ops })).body.releases
  t.match(listed, { digest: v2, version: '2.0.0', size: 4321, holders: 1, arch: 'x64' }, 'the holder\'s word for version and size; the CPU from the manifest of the copy the coordinator holds')
  t.equal(typeof listed.createdAt, 'string')
  t.equal((await client.request('GET', '/api/v1/releases')).status, 401)
  const before = changes
  await client.request('PATCH', '/api/v1/rollouts/r-api', { token: admin, body: { state: 'aborted' } })
  await client.request('POST', '/api/v1/rollouts', { token: admin, body: { id: 'r-events', releases: [v2], allowDowngrade: true } })
  await waitFor(() => changes > before, 'a change event for the new rollout')
  t.pass('a new rollout record is a change')
})
