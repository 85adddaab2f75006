import { ForbiddenError } from '../errors.ts'
import type { Principal } from './auth.ts'
import type { Service, UserRole } from './roles.ts'
import type { FastifyInstance, FastifyRequest, onRequestHookHandler, RouteOptions } from 'fastify'

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The service a route belongs to; callers need a role granting it.
     * `authenticated` only asks for a valid credential (e.g. `auth/me`).
     */
    service?: Service | 'authenticated'
    /** Roles of which the caller must hold one, on top of the service. */
    roles?: UserRole[]
    /** No credential needed: login, refresh, enrollment redemption. */
    public?: boolean
  }
  interface FastifyRequest {
    principal?: Principal
  }
}

export interface AuthPluginOptions {
  /** Turns an Authorization header into a principal, or throws a 401 error. */
  principal: (authorization: string | undefined) => Promise<Principal>
  /** Routes under this prefix must say how they are protected. @default '/api/v1/' */
  prefix?: string
}

/** The principal of an authenticated request; throws if the route was public. */
export function principalOf (request: FastifyRequest): Principal {
  if (request.principal == null) throw new Error('principalOf() on a route without authentication')
  return request.principal
}

/**
 * Every API route declares its service (or `public: true`), a closed
 * querystring schema and, when it takes a body, a closed body schema; a
 * route that forgets fails at start-up instead of shipping unprotected or
 * unvalidated. Authentication runs in `onRequest`, before the body is even
 * parsed, so anonymous callers cannot make the server parse big bodies.
 */
export function authPlugin (app: FastifyInstance, options: AuthPluginOptions): void {
  const prefix = options.prefix ?? '/api/v1/'
  app.decorateRequest('principal', undefined)

  app.addHook('onRoute', (route: RouteOptions) => {
    const config = route.config ?? {}
    const inApi = route.url.startsWith(prefix)
    const headOnly = [route.method].flat().every(m => m === 'HEAD')
    if (inApi && !headOnly) checkDeclared(route, config)
    if (config.public === true || config.service == null) return
    // for the OpenAPI document: this route wants a bearer token
    if (route.schema != null) route.schema.security ??= [{ bearer: [] }]
    const hook = guard(config.service, config.roles, options.principal)
    route.onRequest = route.onRequest == null ? [hook] : [hook, ...[route.onRequest].flat()]
  })
}

function closed (schema: unknown): boolean {
  return schema != null && typeof schema === 'object' && (schema as { additionalProperties?: unknown }).additionalProperties === false
}

function checkDeclared (route: RouteOptions, config: NonNullable<RouteOptions['config']>): void {
  const where = `${[route.method].flat().join(',')} ${route.url}`
  if (config.public !== true && config.service == null) throw new Error(`${where}: API routes must declare config.service or config.public`)
  if (!closed(route.schema?.querystring)) throw new Error(`${where}: API routes need a querystring schema with additionalProperties: false`)
  const takesBody = [route.method].flat().some(m => m === 'POST' || m === 'PUT' || m === 'PATCH')
  if (takesBody && !closed(route.schema?.body)) throw new Error(`${where}: a body schema with additionalProperties: false is required`)
}

function guard (service: Service | 'authenticated', roles: UserRole[] | undefined, principal: AuthPluginOptions['principal']): onRequestHookHandler {
  return async function authenticate (request) {
    const p = await principal(request.headers.authorization)
    if (service !== 'authenticated' && !p.services.includes(service)) {
      throw new ForbiddenError(`your roles (${p.roles.join(', ')}) do not grant the ${service} service`)
    }
    if (roles != null && !roles.some(r => p.roles.includes(r))) {
      throw new ForbiddenError(`this needs one of the roles ${roles.join(', ')}`)
    }
    request.principal = p
  }
}
