import rateLimit from '@fastify/rate-limit'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import { Ajv } from 'ajv'
import Fastify, { LogController, type FastifyInstance } from 'fastify'
import { authPlugin } from './auth/plugin.ts'
import { BadRequestError, coordinatorErrorHandler } from './errors.ts'
import { LoginLimiter, type LoginLimits } from './auth/login-limiter.ts'
import { authRoutes } from './routes/auth.ts'
import { dashboardRoutes } from './routes/dashboard.ts'
import { deploymentRoutes, DeploymentViewSchema } from './routes/deployments.ts'
import { rolloutRoutes, RolloutViewSchema } from './routes/rollouts.ts'
import { enrollmentRoutes } from './routes/enrollments.ts'
import { DEFAULT_MAX_EVENT_STREAMS, eventRoutes } from './routes/events.ts'
import { logRoutes } from './routes/logs.ts'
import { metricsRoutes } from './routes/metrics.ts'
import { modelRoutes, ModelVersionSchema } from './routes/models.ts'
import { monitoringRoutes } from './routes/monitoring.ts'
import { nodeRoutes } from './routes/nodes.ts'
import { predictRoutes } from './routes/predict.ts'
import { DEFAULT_MAX_PREDICT_BYTES } from '../protocols/predict/index.ts'
import { DEFAULT_MAX_DEPTH } from '../protocols/codec.ts'
import { withinDepth } from '../protocols/json-bounds.ts'
import { SHARED_SCHEMAS } from './routes/schemas.ts'
import { tokenRoutes } from './routes/tokens.ts'
import { userRoutes } from './routes/users.ts'
import type { ApiTokenStore } from './auth/api-tokens.ts'
import type { Auth } from './auth/auth.ts'
import type { UserStore } from './auth/users.ts'
import type { Deployments } from './deployments/service.ts'
import type { CoordinatorRollouts } from './rollouts/service.ts'
import type { Enrollment } from './enrollment/enrollment.ts'
import type { LogSearch } from './logs/search.ts'
import type { CoordinatorMetrics } from './metrics.ts'
import type { ModelRepository } from './models/repository.ts'
import type { NodesView } from './nodes/view.ts'
import type { Revocations } from './nodes/revocations.ts'
import type { Registry as PromRegistry } from 'prom-client'
import type { Logger } from 'pino'

/** The parts of the coordinator its HTTP API uses. */
export interface CoordinatorServices {
  auth: Auth
  users: UserStore
  apiTokens: ApiTokenStore
  nodes: Pick<NodesView, 'list' | 'json' | 'get' | 'instances' | 'gateways' | 'models' | 'addEventListener' | 'removeEventListener'>
  logs: Pick<LogSearch, 'search'>
  enrollment: Enrollment
  metrics: CoordinatorMetrics
  /** the model repository (service `models`) */
  models?: ModelRepository
  /** signed deployments and their status (service `deployments`) */
  deployments?: Pick<Deployments, 'create' | 'delete' | 'get' | 'list' | 'addEventListener' | 'removeEventListener'>
  /** agent rollouts: status for the `nodes` service, changes for admins */
  rollouts?: Pick<CoordinatorRollouts, 'create' | 'list' | 'get' | 'change' | 'releases' | 'addEventListener' | 'removeEventListener'>
  /** fleet-signed revocations of nodes (service `nodes`, admins) */
  revocations?: Pick<Revocations, 'revoke' | 'list'>
  /** predict anywhere in the mesh (service `predict`): status and body of the answer */
  /** `requestId`: assigned where the request entered (see predictRequestId), carried to every replica tried */
  predict?: (model: string, version: string | undefined, body: unknown, requestId: string) => Promise<{ status: number, body: unknown }>
  /** failed-login counters; the coordinator's persist in its database */
  loginLimiter?: LoginLimiter
  /** more metrics for `/metrics`, e.g. the embedded agent's */
  prometheus?: PromRegistry[]
  peerId: string
  version: string
}

export interface CoordinatorAppInit {
  logger?: Logger
  /** Serve HTTPS with this certificate and key (PEM). */
  https?: { cert: string | Buffer, key: string | Buffer }
  /** @default 1 MiB */
  bodyLimit?: number
  /** Limits for an in-memory login limiter, when `services.loginLimiter` is not given. @default DEFAULT_LOGIN_LIMITS */
  loginLimits?: Partial<LoginLimits>
  /** @default DEFAULT_MAX_EVENT_STREAMS */
  maxEventStreams?: number
  /** Largest predict body: the embedded agent's `api.maxPredictBytes`, so one limit holds at every hop. @default DEFAULT_MAX_PREDICT_BYTES */
  predictBodyLimit?: number
}

/** What every route module receives. */
export interface CoordinatorContext extends CoordinatorServices {
  logger: Logger
  loginLimiter: LoginLimiter
  maxEventStreams: number
  predictBodyLimit: number
}

const API_PREFIX = '/api/v1/'

/**
 * The coordinator's HTTP app: REST under /api/v1, OpenAPI at /docs, the
 * dashboard at /, Prometheus at /metrics. Built, not listening: call
 * `listen()` yourself, or `inject()` in tests.
 */
export async function buildCoordinatorApp (services: CoordinatorServices, init: CoordinatorAppInit = {}): Promise<FastifyInstance> {
  const logger = init.logger ?? (await import('pino')).pino({ level: 'silent' })
  const app = Fastify({
    loggerInstance: logger.child({ service: 'coordinator-api' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: init.bodyLimit ?? 1024 * 1024,
    exposeHeadRoutes: false,
    ...(init.https == null ? {} : { https: init.https })
  }) as unknown as FastifyInstance
  // query strings are text, so their values are coerced (`limit=5`, repeated `node=`);
  // JSON bodies are typed already, and a string where a number belongs is an error
  const lenient = new Ajv({ removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false })
  const strict = new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false })
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : lenient).compile(schema))
  // JSON.parse copes with any depth, but the validators and the code behind them walk what it
  // returns, and a body nested thousands of levels deep overflows their stack: bound the depth
  // first (a scan that does not recurse), then parse as Fastify does (prototype poisoning refused)
  const parseJson = app.getDefaultJsonParser('error', 'ignore')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (!withinDepth(body as string, DEFAULT_MAX_DEPTH)) {
      done(new BadRequestError(`body nests deeper than ${DEFAULT_MAX_DEPTH} levels`, { field: 'body' }), undefined)
      return
    }
    parseJson(request, body as string, done)
  })
  const ctx: CoordinatorContext = {
    ...services,
    logger: logger.child({ service: 'coordinator' }),
    loginLimiter: services.loginLimiter ?? new LoginLimiter(undefined, init.loginLimits),
    maxEventStreams: init.maxEventStreams ?? DEFAULT_MAX_EVENT_STREAMS,
    predictBodyLimit: init.predictBodyLimit ?? DEFAULT_MAX_PREDICT_BYTES
  }

  app.setErrorHandler(coordinatorErrorHandler)
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: 'Not Found', code: 'ERR_NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` })
  })
  // must come before any route: it checks and guards routes as they are added
  authPlugin(app, { principal: async header => await services.auth.principal(header), prefix: API_PREFIX })
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url
    if (route == null || !route.startsWith(API_PREFIX)) return
    services.metrics.requests.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000)
  })
  // shared schemas are added here, at the root: a plugin that adds its own gets Fastify's
  // default validator (which strips unknown fields) instead of the strict one above
  for (const schema of [...SHARED_SCHEMAS, ModelVersionSchema, DeploymentViewSchema, RolloutViewSchema]) app.addSchema(schema)

  await app.register(rateLimit, { global: false })
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'gatemesh coordinator',
        version: services.version,
        description: 'Users and auth, nodes and monitoring, the model repository, deployments, predict, mesh-wide logs and enrollment. Every /api/v1 route but login, refresh, logout and enroll needs `Authorization: Bearer <access token or gmt_ API token>`; each belongs to a service that the caller\'s roles must grant.'
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an access token from POST /api/v1/auth/login, or an API token (gmt_…)' } } },
      tags: [
        { name: 'auth', description: 'login, refresh, who am I' },
        { name: 'users', description: 'users (admins)' },
        { name: 'tokens', description: 'API tokens for machines (admins)' },
        { name: 'nodes', description: 'gateways, servers, sensors and live events' },
        { name: 'monitoring', description: 'gateway status and model status' },
        { name: 'models', description: 'model repository: upload, versions, signed bundles' },
        { name: 'deployments', description: 'signed deployments and their status' },
        { name: 'rollouts', description: 'agent releases rolled out in waves, with automatic rollback' },
        { name: 'predict', description: 'predict through the coordinator, answered anywhere in the mesh' },
        { name: 'logs', description: 'mesh-wide log search' },
        { name: 'enrollment', description: 'join tokens and device enrollment' }
      ]
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}` }
  })
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true, uiConfig: { deepLinking: false } })

  await app.register(authRoutes, { ctx })
  await app.register(userRoutes, { ctx })
  await app.register(tokenRoutes, { ctx })
  await app.register(nodeRoutes, { ctx })
  await app.register(monitoringRoutes, { ctx })
  await app.register(eventRoutes, { ctx })
  await app.register(modelRoutes, { ctx })
  await app.register(predictRoutes, { ctx })
  await app.register(deploymentRoutes, { ctx })
  await app.register(rolloutRoutes, { ctx })
  await app.register(logRoutes, { ctx })
  await app.register(enrollmentRoutes, { ctx })
  await app.register(metricsRoutes, { ctx })
  await app.register(dashboardRoutes)
  return app
}
