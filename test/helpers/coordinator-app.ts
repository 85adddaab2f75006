import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKey } from '@libp2p/pnet'
import { pino } from 'pino'
import { buildCoordinatorApp, type CoordinatorAppInit, type CoordinatorServices } from '../../coordinator/app.ts'
import { AccessTokens } from '../../coordinator/auth/access-tokens.ts'
import { ApiTokenStore } from '../../coordinator/auth/api-tokens.ts'
import { Auth } from '../../coordinator/auth/auth.ts'
import { LoginLimiter } from '../../coordinator/auth/login-limiter.ts'
import { SessionStore } from '../../coordinator/auth/sessions.ts'
import { UserStore } from '../../coordinator/auth/users.ts'
import { Deployments } from '../../coordinator/deployments/service.ts'
import { Enrollment } from '../../coordinator/enrollment/enrollment.ts'
import { LogSearch } from '../../coordinator/logs/search.ts'
import { CoordinatorMetrics } from '../../coordinator/metrics.ts'
import { ModelRepository } from '../../coordinator/models/repository.ts'
import { NodesView } from '../../coordinator/nodes/view.ts'
import { createLogger } from '../../node/logs/logger.ts'
import { LogStore } from '../../node/logs/log-store.ts'
import { HealthReporter, HealthSampler } from '../../node/membership/health.ts'
import { Membership, type Member, type NodeRecord } from '../../node/membership/membership.ts'
import { Election } from '../../node/scheduler/election.ts'
import { resolveBundle } from '../../node/scheduler/resolve.ts'
import { PredictRouter } from '../../node/scheduler/router.ts'
import { openDatabase, type Database } from '../../node/store/db.ts'
import { verifyBundle } from '../../packaging/bundle/index.ts'
import { fleetIdOf } from '../../packaging/trust.ts'
import { MemoryMesh, type MemoryMember } from './memory-mesh.ts'
import { MemorySwimNetwork } from './memory-swim.ts'
import type { FastifyInstance } from 'fastify'

export const PASSWORDS = { admin: 'admin-password-1', dev: 'developer-pass-1', ops: 'operator-pass-1' }

export interface TestCoordinator {
  app: FastifyInstance
  dir: string
  db: Database
  users: UserStore
  jwtKey: { privateKey: KeyObject, publicKey: KeyObject }
  fleet: { privateKey: KeyObject, publicKey: KeyObject, fleetId: string }
  self: MemoryMember
  gateway: MemoryMember
  logs: LogStore
  logger: ReturnType<typeof createLogger>['logger']
  models: ModelRepository
  deployments: Deployments
  close(): Promise<void>
}

export interface TestCoordinatorOptions extends CoordinatorAppInit {
  accessTtlSec?: number
  /** rollouts for the app, built on the coordinator's own registry and membership */
  rollouts?: (self: { member: MemoryMember, members: () => readonly Member[], logger: ReturnType<typeof createLogger>['logger'] }) => CoordinatorServices['rollouts']
  /** the model repository's upload limit */
  maxUploadBytes?: number
}

/**
 * The coordinator's real services — users, sessions, tokens, nodes view,
 * log search, enrollment — on a fresh level database, with the mesh
 * replaced by registries wired together in memory: one member is the
 * coordinator itself, one a gateway with a sensor and a model instance.
 * The multi-process tests run the real mesh.
 */
export async function testCoordinator (options: TestCoordinatorOptions = {}): Promise<TestCoordinator> {
  const dir = await mkdtemp(join(tmpdir(), 'gm-coord-'))
  const db = await openDatabase(dir)
  const mesh = new MemoryMesh()
  const self = await mesh.add({ role: 'coordinator', labels: { zone: 'lab' } })
  const gateway = await mesh.add({ role: 'gateway', labels: { zone: 'lab' } })
  await mesh.introduce()
  await self.registry.start()
  await gateway.registry.start()
  const selfId = self.peerId.toString()
  const gatewayId = gateway.peerId.toString()
  const record = (role: NodeRecord['role'], sensors: NodeRecord['sensors']): NodeRecord => ({ role, labels: { zone: 'lab' }, addresses: [], sensors, backend: 'wasm', version: 'test', cert: '', startedAt: Date.now() })
  await self.registry.set(`node/${selfId}`, { ...record('coordinator', []), cert: self.cert })
  await gateway.registry.set(`node/${gatewayId}`, { ...record('gateway', [{ id: 'temp-1', type: 'temperature', unit: '°C', geo: { lat: 52.5, lon: 13.4 } }]), cert: gateway.cert })
  await gateway.registry.set(`instance/${gatewayId}/vibration`, { state: 'running', model: 'vibration', version: '1.0.0', backend: 'wasm', startedAt: Date.now() })
  const quiet = pino({ level: 'silent' })
  const swim = new MemorySwimNetwork()
  const memberships = [self, gateway].map(m => new Membership({
    peerId: m.peerId,
    privateKey: m.privateKey,
    registry: m.registry,
    trust: m.trust,
    transport: swim.transport(m.peerId.toString()),
    addresses: () => [],
    logger: quiet
  }, { probeIntervalMs: 200, probeTimeoutMs: 100, gossipIntervalMs: 50, stallThresholdMs: 5000 }))
  for (const m of memberships) await m.start()
  for (const m of [self, gateway]) await new HealthReporter({ peerId: m.peerId.toString(), registry: m.registry, sampler: new HealthSampler(), logger: quiet }).report(true)

  const logs = new LogStore({ flushIntervalMs: 10 })
  await logs.open(db)
  const { logger } = createLogger({ node: selfId, stdout: false, sinks: [logs], level: 'info' })

  const jwtKey = generateKeyPairSync('ed25519')
  const users = new UserStore(db)
  await users.open()
  const sessions = new SessionStore(db)
  await sessions.open()
  const apiTokens = new ApiTokenStore(db)
  await apiTokens.open()
  const auth = new Auth({ users, sessions, accessTokens: new AccessTokens(jwtKey, options.accessTtlSec == null ? {} : { ttlSec: options.accessTtlSec }), apiTokens })
  await users.create({ username: 'admin', password: PASSWORDS.admin, roles: ['admin'] })
  await users.create({ username: 'dev', password: PASSWORDS.dev, roles: ['developer'] })
  await users.create({ username: 'ops', password: PASSWORDS.ops, roles: ['operator'] })

  const nodes = new NodesView({ registry: self.registry, members: () => memberships[0]!.members(), member: peerId => memberships[0]!.member(peerId), membership: memberships[0] }, { refreshMs: 50 })
  await nodes.start()
  const psk = new Uint8Array(95)
  generateKey(psk)
  const fleetKeys = mesh.fleet
  const fleet = { privateKey: fleetKeys.privateKey, publicKey: fleetKeys.publicKey, fleetId: fleetIdOf(fleetKeys.publicKey) }
  const enrollment = new Enrollment({
    db,
    fleet: { ...fleet, publicKeyPem: fleetKeys.publicKey.export({ type: 'spki', format: 'pem' }).toString(), networkKey: psk },
    bootstrap: () => [`/ip4/127.0.0.1/tcp/7402/p2p/${selfId}`]
  })
  const search = new LogSearch({
    self: { peerId: selfId, store: logs },
    members: () => memberships[0]!.members(),
    dial: async () => { throw new Error('no mesh in this test') },
    logger
  })
  const metrics = new CoordinatorMetrics({ users: () => users.size })
  // bundles are verified and advertised as the embedded agent's BundleService does, minus the store
  const models = new ModelRepository({
    db,
    dir: join(dir, 'models'),
    signer: { key: fleet.privateKey },
    publish: async zip => {
      const v = await verifyBundle(zip, { fleetPublicKey: fleet.publicKey })
      await self.registry.set(`bundle/${v.digest}/${selfId}`, { size: v.size, complete: true, name: v.manifest.name, version: v.manifest.version })
    },
    meshDigest: (name, version) => resolveBundle(self.registry, { name, version }),
    logger
  }, options.maxUploadBytes == null ? {} : { maxUploadBytes: options.maxUploadBytes })
  await models.open()
  // the embedded agent's election, as the coordinator has it: it follows the zone's scheduler, never claims
  const election = new Election({ peerId: self.peerId, registry: self.registry, membership: memberships[0]!, logger: quiet }, { labels: { zone: 'lab' }, eligible: false })
  await election.start()
  const deployments = new Deployments({ registry: self.registry, placements: election, members: () => memberships[0]!.members(), member: peerId => memberships[0]!.member(peerId), membership: memberships[0], db, signer: { key: fleet.privateKey }, hasModel: (n, v) => models.has(n, v), logger }, { refreshMs: 50 })
  await deployments.start()
  // the real router: with no replica anywhere it answers 404 without dialling
  const router = new PredictRouter({
    peerId: self.peerId,
    registry: self.registry,
    membership: memberships[0]!,
    runtime: { has: () => false, get: () => { throw new Error('no local runtime') } } as any,
    network: { handle: async () => {}, unhandle: async () => {}, dialProtocol: async () => { throw new Error('no mesh in this test') } },
    logger
  })
  const { maxUploadBytes: _limit, loginLimits, rollouts: withRollouts, ...appOptions } = options
  const rollouts = withRollouts?.({ member: self, members: () => memberships[0]!.members(), logger })
  // persisted in the test's database, as the coordinator's are
  const loginLimiter = new LoginLimiter(db, loginLimits)
  await loginLimiter.open()
  const app = await buildCoordinatorApp({
    auth, users, apiTokens, loginLimiter, nodes, logs: search, enrollment, metrics, peerId: selfId, version: 'test',
    models, deployments, predict: async (model, version, body, requestId) => await router.predict(model, version, body, undefined, requestId),
    ...(rollouts == null ? {} : { rollouts })
  }, { logger, ...appOptions })
  return {
    app,
    dir,
    db,
    users,
    jwtKey,
    fleet,
    self,
    gateway,
    logs,
    logger,
    models,
    deployments,
    async close () {
      await app.close()
      await deployments.stop()
      await election.stop()
      await nodes.stop()
      for (const m of memberships) await m.stop()
      sessions.close()
      await apiTokens.close()
      await loginLimiter.flush()
      await logs.close()
      await self.registry.stop()
      await gateway.registry.stop()
      await db.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/** One way of talking to the app: `inject` in-process, or real HTTP over 127.0.0.1. */
export interface Client {
  name: string
  /** the server's URL, for real HTTP */
  base?: string
  request(method: string, url: string, options?: { token?: string, body?: unknown, raw?: string, headers?: Record<string, string> }): Promise<{ status: number, headers: Record<string, string>, body: any, text: string }>
}

export function injectClient (app: FastifyInstance): Client {
  return {
    name: 'inject',
    async request (method, url, options = {}) {
      const headers: Record<string, string> = { ...options.headers }
      if (options.token != null) headers.authorization = `Bearer ${options.token}`
      let payload: string | undefined
      if (options.raw != null) payload = options.raw
      else if (options.body !== undefined) payload = JSON.stringify(options.body)
      if (payload != null) headers['content-type'] ??= 'application/json'
      const res = await app.inject({ method: method as any, url, headers, ...(payload == null ? {} : { payload }) })
      let body: any
      try { body = res.json() } catch { body = undefined }
      return { status: res.statusCode, headers: res.headers as Record<string, string>, body, text: res.body }
    }
  }
}

export async function httpClient (app: FastifyInstance): Promise<Client> {
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    name: 'http',
    base,
    async request (method, url, options = {}) {
      const headers: Record<string, string> = { ...options.headers }
      if (options.token != null) headers.authorization = `Bearer ${options.token}`
      let payload: string | undefined
      if (options.raw != null) payload = options.raw
      else if (options.body !== undefined) payload = JSON.stringify(options.body)
      if (payload != null) headers['content-type'] ??= 'application/json'
      const res = await fetch(base + url, { method, headers, body: payload, signal: AbortSignal.timeout(15_000) })
      const text = await res.text()
      let body: any
      try { body = JSON.parse(text) } catch { body = undefined }
      return { status: res.status, headers: Object.fromEntries(res.headers), body, text }
    }
  }
}
