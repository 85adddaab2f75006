import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent } from '../node/agent.ts'
import { openDatabase, type Database } from '../node/store/db.ts'
import type { DiskGuard } from '../node/store/disk-guard.ts'
import { resolveBundle } from '../node/scheduler/resolve.ts'
import { VERSION } from '../node/version.ts'
import { buildCoordinatorApp, type CoordinatorAppInit } from './app.ts'
import { AccessTokens } from './auth/access-tokens.ts'
import { ApiTokenStore } from './auth/api-tokens.ts'
import { Auth } from './auth/auth.ts'
import { LoginLimiter } from './auth/login-limiter.ts'
import { generatePassword, type ScryptParams } from './auth/passwords.ts'
import { SessionStore } from './auth/sessions.ts'
import { UserStore } from './auth/users.ts'
import { COORDINATOR_FILES, ensureNodeDir, loadOrCreateJwtKey, type MeshOptions } from './data-dir.ts'
import { Deployments } from './deployments/service.ts'
import { CoordinatorRollouts } from './rollouts/service.ts'
import { Enrollment } from './enrollment/enrollment.ts'
import { LogSearch } from './logs/search.ts'
import { CoordinatorMetrics } from './metrics.ts'
import { ModelRepository, type ModelRepositoryInit } from './models/repository.ts'
import { NodesView } from './nodes/view.ts'
import { Revocations } from './nodes/revocations.ts'
import { RenewalService } from './enrollment/renewal.ts'
import { revocationKey } from '../protocols/registry/revocation.ts'
import { grpcAuthorizer } from './grpc.ts'
import { embed, type EmbeddedAgent } from './embedded-agent.ts'
import { GrpcServing } from '../node/api/grpc/server.ts'
import type { Fleet } from '../node/identity/fleet.ts'
import type { FastifyInstance } from 'fastify'

export const DEFAULT_PORT = 7480
/** TensorFlow Serving's gRPC API, beside the HTTP port: the HTTP port + 1 (7481 by default). */
export const DEFAULT_GRPC_PORT = DEFAULT_PORT + 1
export const DEFAULT_HOST = '0.0.0.0'
export const FIRST_ADMIN = 'admin'

export interface CoordinatorInit extends MeshOptions {
  dataDir: string
  fleetDir: string
  /** HTTP port. @default DEFAULT_PORT */
  port?: number
  /** @default DEFAULT_HOST */
  host?: string
  /** PEM files: serve HTTPS */
  tls?: { certFile: string, keyFile: string }
  /** Forwarded to the HTTP app (login limits, stream limits). */
  app?: Pick<CoordinatorAppInit, 'loginLimits' | 'maxEventStreams' | 'bodyLimit'>
  /** Password hashing cost. @default DEFAULT_SCRYPT */
  scrypt?: ScryptParams
  /** Upload limits of the model repository. */
  models?: ModelRepositoryInit
  /** gRPC port (TensorFlow Serving's API, on `host`, with TLS when `tls` is set); `false` serves none. @default the HTTP port + 1 (DEFAULT_GRPC_PORT) */
  grpcPort?: number | false
}

/** Written to `<dataDir>/coordinator.json` once listening. */
export interface CoordinatorRuntime {
  url: string
  peerId: string
  pid: number
  addresses: string[]
  startedAt: number
  /** host:port of the gRPC API, when it listens */
  grpc?: string
}

export interface StartResult {
  url: string
  /** host:port of the gRPC API, when it listens */
  grpc?: string
  /** set on the very first start only: print it once, it is stored nowhere */
  firstAdmin?: { username: string, password: string }
}

/** Open the coordinator's own database (`<dataDir>/db`), e.g. for `gatemesh user add`; writes report to `disk` when given. */
export async function openCoordinatorDb (dataDir: string, disk?: DiskGuard): Promise<Database> {
  return await openDatabase(dataDir, { owner: 'coordinator', ...(disk == null ? {} : { guard: disk }) })
}

/**
 * The coordinator process: a mesh peer (an embedded agent with role
 * `coordinator` and a certificate from the fleet key it holds) plus the
 * web API and dashboard. It keeps users, sessions, API tokens and join
 * tokens; everything about the fleet it reads from the mesh.
 */
export class Coordinator {
  readonly dataDir: string
  /** the embedded agent, through what the coordinator uses of it */
  readonly agent: EmbeddedAgent
  readonly users: UserStore
  readonly nodes: NodesView
  readonly models: ModelRepository
  readonly deployments: Deployments
  readonly rollouts: CoordinatorRollouts
  readonly revocations: Revocations
  readonly #renewal: RenewalService
  readonly #init: CoordinatorInit
  readonly #db: Database
  readonly #sessions: SessionStore
  readonly #apiTokens: ApiTokenStore
  readonly #auth: Auth
  readonly #loginLimiter: LoginLimiter
  readonly #logs: LogSearch
  readonly #enrollment: Enrollment
  readonly #metrics: CoordinatorMetrics
  #app?: FastifyInstance
  #grpc?: GrpcServing
  #url = ''

  private constructor (init: CoordinatorInit, agent: EmbeddedAgent, db: Database, parts: { accessTokens: AccessTokens, enrollment: Enrollment, fleet: Fleet }) {
    this.#init = init
    this.dataDir = init.dataDir
    this.agent = agent
    this.#db = db
    this.users = new UserStore(db, init.scrypt == null ? {} : { scrypt: init.scrypt })
    this.#sessions = new SessionStore(db)
    this.#apiTokens = new ApiTokenStore(db)
    this.#auth = new Auth({ users: this.users, sessions: this.#sessions, accessTokens: parts.accessTokens, apiTokens: this.#apiTokens })
    // in the coordinator's database: a restart must not hand an attacker fresh attempts
    this.#loginLimiter = new LoginLimiter(db, init.app?.loginLimits)
    this.#enrollment = parts.enrollment
    this.#metrics = new CoordinatorMetrics({ users: () => this.users.size })
    this.nodes = new NodesView({ registry: agent.registry, members: () => agent.membership.members(), member: peerId => agent.membership.member(peerId), membership: agent.membership, logger: agent.logger.child({ service: 'nodes' }) })
    this.revocations = new Revocations({ registry: agent.registry, fleetKey: parts.fleet.privateKey, self: agent.peerId, logger: agent.logger.child({ service: 'coordinator' }) })
    this.#renewal = new RenewalService({
      network: agent.network,
      fleet: parts.fleet,
      isRevoked: peerId => agent.registry.value(revocationKey(peerId)) != null,
      logger: agent.logger.child({ service: 'enrollment' })
    })
    // the coordinator holds the fleet key: its own agent renews by signing, not by asking
    agent.useCertificateIssuer(async current => await this.#renewal.issueFor(agent.peerId, current))
    const signer = { key: parts.fleet.privateKey }
    this.models = new ModelRepository({
      db,
      dir: join(init.dataDir, COORDINATOR_FILES.models),
      signer,
      publish: async zip => { await agent.bundles.publish(zip) },
      held: digest => agent.bundles.held(digest),
      meshDigest: (name, version) => resolveBundle(agent.registry, { name, version }),
      logger: agent.logger.child({ service: 'models' })
    }, init.models)
    this.deployments = new Deployments({
      registry: agent.registry,
      placements: agent.placements,
      members: () => agent.membership.members(),
      member: peerId => agent.membership.member(peerId),
      membership: agent.membership,
      db,
      signer,
      hasModel: (name, version) => this.models.has(name, version),
      logger: agent.logger.child({ service: 'deployments' })
    })
    this.rollouts = new CoordinatorRollouts({
      registry: agent.registry,
      membership: agent.membership,
      releases: agent.releases,
      bundles: agent.bundles,
      signer,
      logger: agent.logger.child({ service: 'rollouts' })
    })
    this.#logs = new LogSearch({
      self: { peerId: agent.peerId, store: agent.logs },
      members: () => agent.membership.members(),
      dial: async (peerId, addresses, protocol, signal) => await agent.dial(peerId, addresses, protocol, signal),
      logger: agent.logger.child({ service: 'coordinator' })
    })
  }

  static async create (init: CoordinatorInit): Promise<Coordinator> {
    const { nodeDir, fleet } = await ensureNodeDir(init.dataDir, init.fleetDir, init)
    const keys = await loadOrCreateJwtKey(init.dataDir)
    const agent = embed(await Agent.create(nodeDir))
    let db: Database
    try {
      db = await openCoordinatorDb(init.dataDir, agent.disk)
    } catch (err) {
      await agent.stop().catch(() => {})
      throw err
    }
    const enrollment = new Enrollment({ db, fleet, bootstrap: () => meshBootstrap(agent) })
    return new Coordinator(init, agent, db, { accessTokens: new AccessTokens(keys), enrollment, fleet })
  }

  get url (): string {
    return this.#url
  }

  get peerId (): string {
    return this.agent.peerId
  }

  async start (): Promise<StartResult> {
    await this.users.open()
    await this.#sessions.open()
    await this.#apiTokens.open()
    await this.#loginLimiter.open()
    await this.models.open()
    await this.agent.start()
    await this.#renewal.start()
    await this.nodes.start()
    await this.deployments.start()
    this.rollouts.start()
    await this.models.republish()
    const result: StartResult = { url: '' }
    if (this.users.size === 0) {
      const password = generatePassword()
      await this.users.create({ username: FIRST_ADMIN, password, roles: ['admin'] })
      result.firstAdmin = { username: FIRST_ADMIN, password }
      this.agent.logger.info({ service: 'coordinator', user: FIRST_ADMIN }, 'created the first admin; its password was printed once on stdout')
    }
    const tls = this.#init.tls == null
      ? undefined
      : { cert: await readFile(this.#init.tls.certFile), key: await readFile(this.#init.tls.keyFile) }
    this.#app = await buildCoordinatorApp({
      auth: this.#auth,
      users: this.users,
      apiTokens: this.#apiTokens,
      loginLimiter: this.#loginLimiter,
      nodes: this.nodes,
      logs: this.#logs,
      enrollment: this.#enrollment,
      metrics: this.#metrics,
      models: this.models,
      deployments: this.deployments,
      rollouts: this.rollouts,
      revocations: this.revocations,
      predict: async (model, version, body, requestId) => await this.agent.predict(model, version, body, requestId),
      prometheus: [this.agent.prometheus],
      peerId: this.peerId,
      version: VERSION
    }, { logger: this.agent.logger, predictBodyLimit: this.agent.maxPredictBytes, ...this.#init.app, ...(tls == null ? {} : { https: tls }) })
    this.#url = await this.#app.listen({ host: this.#init.host ?? DEFAULT_HOST, port: this.#init.port ?? DEFAULT_PORT })
    result.url = this.#url
    if (this.#init.grpcPort !== false) {
      this.#grpc = new GrpcServing(this.agent.grpcBackend(), {
        host: this.#init.host ?? DEFAULT_HOST,
        port: this.#init.grpcPort ?? (this.#init.port == null ? DEFAULT_GRPC_PORT : this.#init.port === 0 ? 0 : this.#init.port + 1),
        ...(tls == null ? {} : { tls }),
        // the same limit as REST and the mesh: the embedded agent's
        maxMessageBytes: this.agent.maxPredictBytes,
        authorize: grpcAuthorizer(this.#auth),
        logger: this.agent.logger.child({ service: 'coordinator-grpc' })
      })
      try {
        result.grpc = await this.#grpc.start()
      } catch (err: any) {
        // a second door to predict: the coordinator runs on without it, and says why
        this.#grpc = undefined
        this.agent.logger.warn({ service: 'coordinator-grpc', err: err.message }, 'gRPC API not started: its port cannot be bound (--grpc-port N, or --no-grpc)')
      }
    }
    await this.#writeRuntime()
    this.agent.logger.info({ service: 'coordinator', url: this.#url, tls: tls != null, peerId: this.peerId }, 'coordinator started')
    return result
  }

  async stop (): Promise<void> {
    this.agent.logger.info({ service: 'coordinator' }, 'coordinator stopping')
    await this.#grpc?.stop()
    await this.#app?.close()
    await this.deployments.stop()
    this.rollouts.stop()
    await this.nodes.stop()
    await this.#renewal.stop().catch(() => {})
    this.#sessions.close()
    await this.#apiTokens.close()
    await this.#loginLimiter.flush()
    await this.#db.close()
    await this.agent.stop()
  }

  async #writeRuntime (): Promise<void> {
    const info: CoordinatorRuntime = { url: this.#url, peerId: this.peerId, pid: process.pid, addresses: this.agent.addresses(), startedAt: Date.now(), ...(this.#grpc == null ? {} : { grpc: this.#grpc.address }) }
    const path = join(this.dataDir, COORDINATOR_FILES.runtime)
    await writeFile(`${path}.tmp`, JSON.stringify(info, null, 2) + '\n')
    await rename(`${path}.tmp`, path)
  }
}

/** The coordinator's mesh addresses for devices to bootstrap from; loopback only when there is nothing else. */
export function meshBootstrap (agent: Pick<EmbeddedAgent, 'addresses'>): string[] {
  const all = agent.addresses()
  const remote = all.filter(a => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'))
  return remote.length > 0 ? remote : all
}
