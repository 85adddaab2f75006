import Fastify, { LogController, type FastifyInstance } from 'fastify'
import { accessControl } from './access.ts'
import { errorHandler } from './errors.ts'
import { bundleRoutes, type BundleApi } from './routes/bundles.ts'
import { healthRoutes } from './routes/health.ts'
import { instanceRoutes } from './routes/instances.ts'
import { modelRoutes } from './routes/models.ts'
import { registryRoutes } from './routes/registry.ts'
import { statusRoutes } from './routes/status.ts'
import { watchRoutes } from './routes/watch.ts'
import type { AgentMetrics } from '../metrics/metrics.ts'
import type { LocalHealthState, Member, SelfClock } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { LocalRuntime } from '../runtime/local.ts'
import type { PredictRouter } from '../scheduler/router.ts'
import type { SeenSummary } from '../scheduler/zone-summary.ts'
import { deploymentRoutes, type SchedulingView } from './routes/deployments.ts'
import { rolloutRoutes, type ReleaseApi } from './routes/rollouts.ts'
import type { DiskState } from '../store/disk-guard.ts'
import type { Logger } from 'pino'

/** What the HTTP API needs from the agent. */
export interface AgentView {
  peerId: string
  role: string
  labels: Record<string, string>
  version: string
  startedAt: number
  addresses(): string[]
  members(): readonly Member[]
  /** this node's own liveness signals: Lifeguard health and clock agreement */
  membership?: { localHealth(): LocalHealthState, clock(): SelfClock }
  registry: Pick<Registry, 'list' | 'get' | 'value' | 'set' | 'delete' | 'size' | 'onChange' | 'stampFor' | 'revocations'> & Partial<Pick<Registry, 'keepsZoneOf'>>
  metrics: AgentMetrics
  deniedPeers(): Array<{ peerId: string, reason: string }>
  /** sensors, model instances and the outbox, when the agent runs them */
  local?: Pick<LocalRuntime, 'runtime' | 'devices' | 'outbox'> & Partial<Pick<LocalRuntime, 'scriptIsolation'>>
  /** Predict and model status for models that run on other nodes. */
  router?: Pick<PredictRouter, 'predict' | 'status'>
  /** Deployments, the scheduler and drain/evict; the routes exist only when present. */
  scheduling?: SchedulingView
  /** Bundle store and pulls; the routes exist only when present. */
  bundles?: BundleApi
  /** Rollouts and this node's releases; the routes exist only when present. */
  releases?: ReleaseApi
  /** The disk under the data dir (full or not), for status. */
  disk?: { state(): DiskState }
  /** This node's zone, the zones whose state it keeps, and every zone's summary, for status. */
  zones?: () => ZonesStatus
}

export interface ZonesStatus {
  zone: string
  followsAll: boolean
  following: string[]
  summaries: SeenSummary[]
}

export interface ApiInit {
  /** the node's API token: required for every route that changes state (see access.ts) */
  token: string
  /**
   * Serve HTTPS with this certificate and key (PEM): what lets the API
   * listen beyond loopback. Without it the API must listen on loopback only.
   */
  https?: { cert: string | Buffer, key: string | Buffer }
  logger?: Logger
  /** @default 1 MiB */
  bodyLimit?: number
  /** Largest predict body (config `api.maxPredictBytes`). @default DEFAULT_MAX_PREDICT_BYTES */
  predictBodyLimit?: number
  /** `/v1/watch` streams open at once. @default DEFAULT_MAX_WATCH_STREAMS */
  maxWatchStreams?: number
}

/** Build the agent's HTTP API (not listening: call `listen` yourself, or `inject` in tests). */
export async function buildApi (agent: AgentView, init: ApiInit): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: init.logger?.child({ service: 'api' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: init.bodyLimit ?? 1024 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
    ...(init.https == null ? {} : { https: init.https })
  }) as unknown as FastifyInstance
  app.setErrorHandler(errorHandler)
  // fastify's own 404 has no code: every refusal of this API carries one (found by fuzzing)
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: 'Not Found', code: 'ERR_NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]!.slice(0, 256)}` })
  })
  // before any route: it sets every route's access as the route is added
  accessControl(app, { token: init.token, loopbackOnly: init.https == null })
  await app.register(healthRoutes, { agent })
  await app.register(statusRoutes, { agent })
  await app.register(registryRoutes, { agent })
  await app.register(watchRoutes, { agent, ...(init.maxWatchStreams == null ? {} : { maxStreams: init.maxWatchStreams }) })
  await app.register(modelRoutes, { agent, ...(init.predictBodyLimit == null ? {} : { bodyLimit: init.predictBodyLimit }) })
  await app.register(instanceRoutes, { agent })
  if (agent.bundles != null) await app.register(bundleRoutes, { bundles: agent.bundles })
  if (agent.scheduling != null) await app.register(deploymentRoutes, { agent, scheduling: agent.scheduling })
  if (agent.releases != null) await app.register(rolloutRoutes, { agent, releases: agent.releases, ...(agent.bundles == null ? {} : { bundles: agent.bundles }) })
  return app
}
