import { readFile, writeFile, rename } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { agentServices } from './agent-services.ts'
import { buildApi } from './api/server.ts'
import type { GrpcServing } from './api/grpc/server.ts'
import { ConfigError } from './config/config.ts'
import { ensureApiToken } from './identity/api-token.ts'
import { loadNodeDir, tightenSecretModes, type NodeIdentity } from './identity/node-dir.ts'
import { LogStore } from './logs/log-store.ts'
import { createLogger, type Logger } from './logs/logger.ts'
import { createMesh, type Mesh } from './mesh/libp2p.ts'
import { AgentMetrics } from './metrics/metrics.ts'
import { MallocTrim } from './metrics/malloc-trim.ts'
import { openDatabase, type Database } from './store/db.ts'
import { DiskGuard } from './store/disk-guard.ts'
import { trustGater, type TrustService } from './trust/service.ts'
import { zoneSummaries } from './scheduler/zone-summary.ts'
import { VERSION } from './version.ts'
import type { BundleService } from './bundles/service.ts'
import type { LogQueryService } from './logs/log-query-service.ts'
import type { Connector } from './membership/connector.ts'
import type { HealthReporter } from './membership/health.ts'
import type { HealthRelay } from './registry/relay.ts'
import type { NodeRecord } from './membership/membership.ts'
import type { MembershipService } from './membership/service.ts'
import type { ServicePart } from './mesh/part.ts'
import type { RegistryService } from './registry/service.ts'
import type { ReleaseService } from './release/service.ts'
import type { LocalRuntime } from './runtime/local.ts'
import type { RouterService } from './scheduler/router-service.ts'
import type { SchedulingService } from './scheduler/service.ts'
import type { CertificateRenewal } from './trust/renewal.ts'
import type { FastifyInstance } from 'fastify'

/** Written to `<dataDir>/agent.json` once the agent is up, for the CLI and tests. */
export interface RuntimeInfo {
  peerId: string
  pid: number
  api: string
  addresses: string[]
  startedAt: number
  /** host:port of the gRPC API (TensorFlow Serving), when it listens */
  grpc?: string
}

export const RUNTIME_FILE = 'agent.json'

/** The agent's own services in its libp2p node, beside identify, ping and pubsub. */
export type AgentServices = {
  trust: TrustService
  registry: RegistryService
  logQuery: ServicePart<LogQueryService>
  bundles: ServicePart<BundleService>
  local: ServicePart<LocalRuntime>
  membership: MembershipService
  health: ServicePart<HealthReporter>
  connector: ServicePart<Connector>
  scheduling: SchedulingService
  router: RouterService
  releases: ServicePart<ReleaseService>
  relay: ServicePart<HealthRelay>
  renewal: ServicePart<CertificateRenewal>
}

/**
 * The composition root: one agent process on a gateway or server. Its parts
 * are services of its libp2p node, which starts them with the mesh in the
 * order they depend on each other (node/mesh/lifecycle.ts) and, when one
 * fails to start, stops those that did. The agent itself adds the local
 * HTTP and gRPC APIs and `agent.json`.
 */
export class Agent {
  readonly dataDir: string
  readonly identity: NodeIdentity
  readonly logger: Logger
  readonly metrics: AgentMetrics
  /** the disk under the data dir: full or not, and resuming writes when space returns */
  readonly disk: DiskGuard
  readonly trust: TrustService
  /** renews this node's certificate from a coordinator before it expires */
  readonly renewal: CertificateRenewal
  readonly mesh: Mesh<AgentServices>
  readonly registry: RegistryService
  readonly membership: MembershipService
  /** writes `health/<self>` when it changes */
  readonly health: HealthReporter
  readonly connector: Connector
  /** this node's own logs, searchable from the coordinator over the mesh */
  readonly logs: LogStore
  readonly logQuery: LogQueryService
  readonly bundles: BundleService
  /** sensors, actuators, model instances, actions and the outbox */
  readonly local: LocalRuntime
  /** election, scheduler, reconciler, drain/evict */
  readonly scheduling: SchedulingService
  /** predict for models that run on other nodes */
  readonly router: RouterService
  /** agent releases and rollouts: this node's part */
  readonly releases: ReleaseService
  readonly #db: Database
  readonly #closeLog: () => void
  readonly #apiToken: string
  readonly startedAt = Date.now()
  #api?: FastifyInstance
  #apiUrl = ''
  #grpc?: GrpcServing
  #grpcStarting?: Promise<void>
  #trim?: MallocTrim
  #runtimeWrite: Promise<void> = Promise.resolve()
  #exit?: (code: number, reason: string) => void

  private constructor (dataDir: string, identity: NodeIdentity, apiToken: string, db: Database, disk: DiskGuard, logger: Logger, closeLog: () => void, mesh: Mesh<AgentServices>, metrics: AgentMetrics, logs: LogStore) {
    this.dataDir = dataDir
    this.identity = identity
    this.#apiToken = apiToken
    this.#db = db
    this.disk = disk
    this.logger = logger
    this.#closeLog = closeLog
    this.mesh = mesh
    this.metrics = metrics
    this.logs = logs
    const s = mesh.services
    this.trust = s.trust
    this.registry = s.registry
    this.logQuery = s.logQuery.part
    this.bundles = s.bundles.part
    this.local = s.local.part
    this.membership = s.membership
    this.health = s.health.part
    this.connector = s.connector.part
    this.scheduling = s.scheduling
    this.router = s.router
    this.releases = s.releases.part
    this.renewal = s.renewal.part
  }

  /** Load a node directory and build (not start) its agent. */
  static async create (dataDir: string): Promise<Agent> {
    const narrowed = await tightenSecretModes(dataDir)
    const identity = await loadNodeDir(dataDir)
    // directories made before API tokens existed get theirs now
    const apiToken = await ensureApiToken(dataDir)
    const { config, peerId } = identity
    const logs = new LogStore({ maxEntries: config.logs.retainEntries, maxBytes: config.logs.retainBytes, maxAgeMs: config.logs.retainHours * 3600_000 })
    const metrics = new AgentMetrics({ node: peerId.toString().slice(-8) })
    // first: the log file is one of the writers a full disk stops
    const disk = new DiskGuard({ dataDir, metrics })
    const { logger, close } = createLogger({
      node: peerId.toString(),
      level: config.logs.level,
      dir: join(dataDir, 'logs'),
      maxFileBytes: config.logs.maxFileBytes,
      files: config.logs.files,
      stdout: config.logs.stdout,
      sinks: [logs],
      onFileError: (err, path) => {
        if (disk.report(err, path)) return
        setImmediate(() => { logger.warn({ service: 'logs', path, err: err.message }, 'writing the log file failed; its lines are dropped until it works again') })
      }
    })
    disk.useLogger(logger)
    if (narrowed.length > 0) logger.warn({ service: 'agent', files: narrowed }, 'secret files of the node directory were readable by others; narrowed to 0600')
    let db: Database
    try {
      db = await openDatabase(dataDir, { guard: disk, logger })
    } catch (err: any) {
      // the CLI prints it too, but the journal and the log file should say what to do
      logger.error({ service: 'agent', code: err.code, path: err.path, err: err.message }, 'cannot open the database')
      disk.close()
      close()
      throw err
    }
    // services write node/<self> and ask to exit before the agent exists; they reach it once it does
    const self: { agent?: Agent } = {}
    const announce = async (): Promise<void> => { if (self.agent != null) await self.agent.#announce() }
    let mesh: Mesh<AgentServices> | undefined
    try {
      mesh = await createMesh<AgentServices>({
        privateKey: identity.privateKey,
        networkKey: identity.networkKey,
        listen: config.listen,
        announce: config.announce,
        bootstrap: config.bootstrap,
        mdns: config.mdns,
        gater: trustGater(() => mesh?.services.trust),
        maxConnections: config.connections.maxConnections,
        version: VERSION,
        services: agentServices({ dataDir, identity, db, logger, metrics, logs, announce, exit: (code, reason) => { if (self.agent != null) self.agent.#exit?.(code, reason) } })
      })
      await logs.open(db)
    } catch (err) {
      disk.close()
      await db.close().catch(() => {})
      close()
      throw err
    }
    self.agent = new Agent(dataDir, identity, apiToken, db, disk, logger, close, mesh, metrics, logs)
    return self.agent
  }

  get peerId (): string {
    return this.identity.peerId.toString()
  }

  get apiUrl (): string {
    return this.#apiUrl
  }

  addresses (): string[] {
    return this.mesh.getMultiaddrs().map(a => a.toString())
  }

  async start (): Promise<void> {
    const { config } = this.identity
    // every service starts with the node, in order (agentServices says why
    // each waits for what it waits for); a failed start stops what started
    await this.mesh.start()

    const claims = this.trust.claimsFor(this.peerId)
    this.#api = await buildApi({
      peerId: this.peerId,
      role: claims?.role ?? config.role,
      labels: claims?.labels ?? config.labels,
      version: VERSION,
      startedAt: this.startedAt,
      addresses: () => this.addresses(),
      members: () => this.membership.members(),
      membership: this.membership,
      registry: this.registry,
      metrics: this.metrics,
      deniedPeers: () => this.trust.deniedPeers(),
      bundles: this.bundles,
      local: this.local,
      router: this.router,
      scheduling: this.scheduling.view(),
      zones: () => ({ ...this.registry.zones(), summaries: zoneSummaries(this.registry, this.scheduling.election) }),
      releases: this.releases,
      disk: this.disk
    }, {
      token: this.#apiToken,
      logger: this.logger,
      predictBodyLimit: config.api.maxPredictBytes,
      maxWatchStreams: config.api.maxWatchStreams,
      ...(config.api.tls == null ? {} : { https: await this.#readTls(config.api.tls) })
    })
    const address = await this.#api.listen({ host: config.api.host, port: config.api.port })
    this.#apiUrl = address
    // gRPC loads its stack (a few hundred ms, much more on a busy gateway) after the agent is up,
    // and agent.json names its address once it listens
    if (config.grpc.enabled) {
      this.#grpcStarting = this.#startGrpc().then(async () => { if (this.#grpc != null) await this.#writeRuntime() }).catch(err => {
        this.logger.warn({ service: 'grpc', err: err.message }, 'gRPC API not started')
      })
    }
    // peers (and the coordinator's deployment endpoints) learn where this API answers
    await this.#announce()
    await this.#writeRuntime()
    this.#trim = new MallocTrim({ intervalMs: config.memory.trimIntervalMs, logger: this.logger, registry: this.metrics.registry })
    await this.#trim.start()
    this.logger.info({ service: 'agent', api: this.#apiUrl, addresses: this.addresses(), role: config.role }, 'agent started')
  }

  /** How the process ends when the agent asks to (runService): a restart into a new release. */
  onExitRequest (exit: (code: number, reason: string) => void): void {
    this.#exit = exit
  }

  /** gRPC is a second door to the same models: a port that is taken is logged, and the agent runs on without it. */
  async #startGrpc (): Promise<void> {
    const { config } = this.identity
    // the gRPC stack loads only where it is enabled
    const { GrpcServing } = await import('./api/grpc/server.ts')
    const { agentBackend } = await import('./api/grpc/agent-backend.ts')
    const grpc = new GrpcServing(agentBackend({ runtime: this.local.runtime, router: this.router }), {
      host: config.grpc.host,
      port: config.grpc.port,
      // the same limit as REST and the mesh
      maxMessageBytes: config.api.maxPredictBytes,
      logger: this.logger.child({ service: 'grpc' })
    })
    try {
      await grpc.start()
      this.#grpc = grpc
    } catch (err: any) {
      this.logger.warn({ service: 'grpc', host: config.grpc.host, port: config.grpc.port, err: err.message }, 'gRPC API not started: the port cannot be bound (set grpc.port in config.json)')
    }
  }

  /** host:port of the gRPC API, when it listens. */
  get grpcAddress (): string | undefined {
    return this.#grpc?.address
  }

  async stop (): Promise<void> {
    this.logger.info({ service: 'agent' }, 'agent stopping')
    this.#trim?.stop()
    await this.#grpcStarting
    await this.#grpc?.stop()
    await this.#api?.close()
    // the services stop with the node, each after those that depend on it
    await this.mesh.stop()
    await this.logs.close()
    this.disk.close()
    await this.#db.close()
    this.#closeLog()
  }

  /** Write `node/<self>` with what peers need to reach and trust us. */
  async #announce (): Promise<void> {
    const { config } = this.identity
    // the certificate is what peers believe; config.role and config.labels only ask for it
    const claims = this.trust.claimsFor(this.peerId)
    const record: NodeRecord = {
      role: claims?.role ?? config.role,
      labels: claims?.labels ?? config.labels,
      addresses: this.addresses(),
      sensors: this.local.devices.info(),
      backend: this.local.runtime.backend,
      version: VERSION,
      cert: this.trust.certificate,
      startedAt: this.startedAt,
      ...(this.#apiUrl === '' ? {} : { api: this.#apiUrl }),
      ...this.scheduling.nodeFields()
    }
    await this.registry.set(`node/${this.peerId}`, record)
  }

  async #readTls (tls: { cert: string, key: string }): Promise<{ cert: Buffer, key: Buffer }> {
    const read = async (file: string, field: string): Promise<Buffer> => await readFile(resolve(this.dataDir, file)).catch((err: any) => {
      throw new ConfigError(`${field}: cannot read ${resolve(this.dataDir, file)}: ${err.code ?? err.message}`, field, { cause: err })
    })
    return { cert: await read(tls.cert, 'config.api.tls.cert'), key: await read(tls.key, 'config.api.tls.key') }
  }

  /** Writes run one after another, each with what is true when it runs, so the last one written is the latest. */
  async #writeRuntime (): Promise<void> {
    this.#runtimeWrite = this.#runtimeWrite.catch(() => {}).then(async () => {
      const info: RuntimeInfo = { peerId: this.peerId, pid: process.pid, api: this.#apiUrl, addresses: this.addresses(), startedAt: this.startedAt, ...(this.#grpc == null ? {} : { grpc: this.#grpc.address }) }
      const path = join(this.dataDir, RUNTIME_FILE)
      await writeFile(`${path}.tmp`, JSON.stringify(info, null, 2) + '\n')
      await rename(`${path}.tmp`, path)
    })
    await this.#runtimeWrite
  }
}
