import { readFile, writeFile, rename } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { buildApi } from './api/server.ts'
import type { GrpcServing } from './api/grpc/server.ts'
import { BundleService } from './bundles/service.ts'
import { ensureApiToken } from './identity/api-token.ts'
import { loadNodeDir, NODE_FILES, tightenSecretModes, type NodeIdentity } from './identity/node-dir.ts'
import { LogQueryService } from './logs/log-query-service.ts'
import { LogStore } from './logs/log-store.ts'
import { createLogger, type Logger } from './logs/logger.ts'
import { Connector } from './membership/connector.ts'
import { HealthReporter, HealthSampler } from './membership/health.ts'
import { levelIncarnationStore, Membership, type NodeRecord } from './membership/membership.ts'
import { Libp2pSwimTransport } from './membership/transport.ts'
import { createMesh, type Mesh } from './mesh/libp2p.ts'
import { ConfigError } from './config/config.ts'
import { AgentMetrics } from './metrics/metrics.ts'
import { Registry } from './registry/registry.ts'
import { LevelRegistryStore } from './registry/store.ts'
import { openDatabase, type Database } from './store/db.ts'
import { DiskGuard } from './store/disk-guard.ts'
import { PeerTrust } from './trust/peer-trust.ts'
import { CertificateRenewal, writeCertificateFile } from './trust/renewal.ts'
import { LocalRuntime } from './runtime/local.ts'
import { Scheduling } from './scheduler/index.ts'
import { validateInstanceOverrides } from './scheduler/instance-check.ts'
import { PredictRouter } from './scheduler/router.ts'
import { winningPlacement } from './scheduler/placements.ts'
import { zoneSummaries } from './scheduler/zone-summary.ts'
import { zoneOf } from '../protocols/registry/zones.ts'
import { ReleaseService } from './release/service.ts'
import { VERSION } from './version.ts'
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

/**
 * The composition root: one agent process on a gateway or server. Wires the
 * libp2p mesh, fleet trust, the registry, membership, bundles, the local
 * runtime, scheduling and the local HTTP API, and starts and stops them in
 * order.
 */
export class Agent {
  readonly dataDir: string
  readonly identity: NodeIdentity
  readonly logger: Logger
  readonly metrics: AgentMetrics
  /** the disk under the data dir: full or not, and resuming writes when space returns */
  readonly disk: DiskGuard
  readonly trust: PeerTrust
  /** renews this node's certificate from a coordinator before it expires */
  readonly renewal: CertificateRenewal
  readonly mesh: Mesh
  readonly registry: Registry
  readonly membership: Membership
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
  readonly scheduling: Scheduling
  /** predict for models that run on other nodes */
  readonly router: PredictRouter
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
  #runtimeWrite: Promise<void> = Promise.resolve()
  #peerTimer?: NodeJS.Timeout
  #exit?: (code: number, reason: string) => void

  private constructor (dataDir: string, identity: NodeIdentity, apiToken: string, db: Database, disk: DiskGuard, logger: Logger, closeLog: () => void, mesh: Mesh, trust: PeerTrust, metrics: AgentMetrics, logs: LogStore) {
    this.dataDir = dataDir
    this.identity = identity
    this.#apiToken = apiToken
    this.#db = db
    this.disk = disk
    this.logger = logger
    this.#closeLog = closeLog
    this.mesh = mesh
    this.trust = trust
    this.metrics = metrics
    this.logs = logs
    const { config, peerId, privateKey } = identity
    this.registry = new Registry({
      peerId,
      privateKey,
      pubsub: mesh.services.pubsub,
      network: mesh,
      trust,
      store: new LevelRegistryStore(db),
      logger: logger.child({ service: 'registry' }),
      metrics
    }, { syncIntervalMs: config.registry.syncIntervalMs, maxClockDriftMs: config.registry.maxClockDriftMs, retentionMs: config.registry.retentionMs, quota: config.registry.quota })
    this.renewal = new CertificateRenewal({
      peerId,
      trust,
      network: mesh,
      save: async cert => { await writeCertificateFile(join(dataDir, NODE_FILES.certificate), cert) },
      announce: async () => { await this.#announce() },
      logger: logger.child({ service: 'trust' })
    }, { renewAfterFraction: config.trust.renewAfterFraction, checkIntervalMs: config.trust.renewCheckIntervalMs })
    const { health: healthInit, clockSkewLimitMs, ...swimInit } = config.membership
    this.membership = new Membership({
      peerId,
      privateKey,
      registry: this.registry,
      trust,
      transport: new Libp2pSwimTransport({ network: mesh, trust, logger: logger.child({ service: 'membership' }), observer: { frame: (d, t, b) => { metrics.swimFrame(d, t, b) } } }),
      addresses: () => this.addresses(),
      logger: logger.child({ service: 'membership' }),
      metrics,
      incarnations: levelIncarnationStore(db)
    }, { ...swimInit, clockSkewLimitMs: clockSkewLimitMs ?? Math.round(config.registry.maxClockDriftMs / 4) })
    this.health = new HealthReporter({
      peerId: peerId.toString(),
      registry: this.registry,
      sampler: new HealthSampler(),
      instances: () => {
        const list = this.local.runtime.list()
        return { total: list.length, running: list.filter(i => i.state === 'running').length }
      },
      logger: logger.child({ service: 'membership' })
    }, healthInit)
    this.connector = new Connector({
      peerId,
      network: mesh,
      members: () => this.membership.members(),
      logger: logger.child({ service: 'connector' })
    }, { targetPeers: config.connections.targetPeers, zonePeers: config.connections.zonePeers, zone: () => zoneOf(trust.claimsFor(peerId.toString())?.labels), bootstrap: config.bootstrap })
    this.logQuery = new LogQueryService({ network: mesh, trust, store: logs, logger: logger.child({ service: 'logs' }) })
    const { maxUnpackedBytes, ...bundleInit } = config.bundles
    this.bundles = new BundleService({
      peerId: peerId.toString(),
      dataDir,
      db,
      registry: this.registry,
      network: mesh,
      trust,
      fleetPublicKey: identity.fleetPublicKey,
      logger: logger.child({ service: 'bundles' }),
      metrics
    }, { ...bundleInit, limits: { maxTotalBytes: maxUnpackedBytes } })
    this.local = new LocalRuntime({
      peerId: peerId.toString(),
      dataDir,
      config,
      db,
      registry: this.registry,
      fleetKey: identity.fleetPublicKey,
      bundleZips: this.bundles,
      logger,
      prometheus: metrics.registry,
      onBackend: () => {
        this.#announce().catch(err => { logger.warn({ service: 'agent', err: err.message }, 'announce failed') })
      }
    })
    this.scheduling = new Scheduling({
      peerId,
      role: config.role,
      // the certificate's zone, which the registry files this node's entries under (as #announce)
      labels: () => trust.claimsFor(peerId.toString())?.labels ?? config.labels,
      registry: this.registry,
      membership: this.membership,
      expectPeers: config.bootstrap.length > 0 || config.mdns,
      localHealth: () => this.membership.localHealth(),
      db,
      runtime: this.local.runtime,
      bundles: {
        ensure: async (digest) => {
          this.bundles.pull(digest)
          await this.bundles.waitFor(digest)
        }
      },
      logger,
      announce: async () => { await this.#announce() },
      parseOptions: { validateInstance: validateInstanceOverrides },
      metrics
    }, {
      ...config.scheduler,
      summary: {
        sampleIntervalMs: config.zones.summarySampleMs,
        maxIntervalMs: config.zones.summaryMaxIntervalMs,
        cpuChangePct: config.zones.summaryCpuChangePct,
        memoryChangePct: config.zones.summaryMemoryChangePct
      }
    })
    this.releases = new ReleaseService({
      peerId: peerId.toString(),
      dataDir,
      labels: config.labels,
      registry: this.registry,
      members: () => this.membership.members(),
      claimsOf: peer => this.trust.claimsFor(peer),
      verifiedPeers: () => this.trust.verifiedPeers().length,
      bundles: this.bundles,
      instances: () => this.local.runtime.list().map(i => ({ name: i.name, state: i.state })),
      placedHere: deployment => winningPlacement(this.registry, deployment, this.scheduling.election)?.nodes.includes(peerId.toString()) === true,
      fleetPublicKey: identity.fleetPublicKey,
      logger: logger.child({ service: 'releases' }),
      exit: (code, reason) => { this.#exit?.(code, reason) }
    }, { limits: { maxTotalBytes: maxUnpackedBytes } })
    this.router = new PredictRouter({
      peerId,
      registry: this.registry,
      membership: this.membership,
      placements: this.scheduling.election,
      runtime: this.local.runtime,
      network: mesh,
      logger: logger.child({ service: 'router' }),
      metrics
    }, { maxBodyBytes: config.api.maxPredictBytes, timeoutMs: config.api.predictTimeoutMs })
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
    const trust = new PeerTrust({ peerId, logger: logger.child({ service: 'trust' }), metrics }, {
      fleetPublicKey: identity.fleetPublicKey,
      certificate: identity.certificate
    })
    const mesh = await createMesh({
      privateKey: identity.privateKey,
      networkKey: identity.networkKey,
      listen: config.listen,
      announce: config.announce,
      bootstrap: config.bootstrap,
      mdns: config.mdns,
      gater: trust.gater(),
      version: VERSION
    })
    trust.attach(mesh)
    let db: Database
    try {
      db = await openDatabase(dataDir, { guard: disk, logger })
    } catch (err: any) {
      // the CLI prints it too, but the journal and the log file should say what to do
      logger.error({ service: 'agent', code: err.code, path: err.path, err: err.message }, 'cannot open the database')
      disk.close()
      try { await mesh.stop() } catch {}
      close()
      throw err
    }
    await logs.open(db)
    return new Agent(dataDir, identity, apiToken, db, disk, logger, close, mesh, trust, metrics, logs)
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
    // verify our own certificate first: an agent with a bad one would only be refused everywhere
    await this.trust.learnCertificate(this.identity.certificate, this.peerId)
    await this.trust.start()
    // revocations on disk are enforced before the first connection
    await this.registry.load()
    await this.mesh.start()
    await this.registry.start()
    await this.logQuery.start()
    // a joining or reconnecting peer catches up through the one it dialled
    this.trust.addEventListener('peer:verified', evt => {
      if (!evt.detail.outbound) return
      this.registry.syncWith(evt.detail.peerId).catch(err => {
        this.logger.debug({ service: 'registry', peer: evt.detail.peerId.toString(), err: err.message }, 'initial sync failed')
      })
    })
    await this.local.start()
    await this.scheduling.control.load()
    await this.#announce()
    await this.membership.start()
    await this.health.start()
    await this.connector.start()
    await this.bundles.start()
    await this.router.start()
    await this.scheduling.start()
    await this.releases.start()
    await this.renewal.start()
    this.#peerTimer = setInterval(() => { this.metrics.peers.set(this.trust.verifiedPeers().length) }, 1000)
    this.#peerTimer.unref()

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
    clearInterval(this.#peerTimer)
    await this.#grpcStarting
    await this.#grpc?.stop()
    await this.#api?.close()
    await this.releases.stop()
    await this.renewal.stop()
    await this.scheduling.stop()
    await this.router.stop()
    await this.bundles.stop()
    await this.connector.stop()
    await this.health.stop()
    await this.membership.stop()
    await this.local.stop()
    await this.logQuery.stop()
    await this.registry.stop()
    await this.trust.stop()
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
