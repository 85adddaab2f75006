import { isLoopbackAddress, isLoopbackHostname } from '../config/loopback.ts'
import { ApiTokenCheck } from '../identity/api-token.ts'
import { ForbiddenHostError, InvalidApiTokenError, UnauthenticatedError } from './errors.ts'
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify'

/**
 * Who may call a route, set per route as `config: { access }`:
 *
 * - `public`: anyone who can connect (`/healthz`);
 * - `read`: any process on this machine; a client elsewhere needs the token;
 * - `token`: only with the node's API token (`Authorization: Bearer gma_…`).
 *
 * A route that says nothing is `read` for GET and HEAD and `token` for
 * every other method, so a new route that changes state is protected
 * without anyone remembering to protect it. This module is the only place
 * that decides.
 */
export type RouteAccess = 'public' | 'read' | 'token'

const ACCESS_LEVELS: readonly RouteAccess[] = ['public', 'read', 'token']

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: RouteAccess
  }
}

export interface AccessInit {
  /** the node's API token (node directory's `api.token`) */
  token: string
  /**
   * The API listens on loopback only: requests must then name a loopback
   * host, which keeps web pages from reading it through DNS rebinding.
   */
  loopbackOnly: boolean
}

function defaultAccess (method: string): RouteAccess {
  return method === 'GET' || method === 'HEAD' ? 'read' : 'token'
}

function bearer (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (header == null) return undefined
  const space = header.indexOf(' ')
  if (space < 0 || header.slice(0, space).toLowerCase() !== 'bearer') return ''
  return header.slice(space + 1).trim()
}

/**
 * Install the access checks on `app`: must be called before any route is
 * added. Runs at `onRequest`, before a body is read, so an unauthenticated
 * upload costs the agent nothing.
 */
export function accessControl (app: FastifyInstance, init: AccessInit): void {
  const check = new ApiTokenCheck(init.token)

  app.addHook('onRoute', (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    const declared = route.config?.access
    if (declared != null && !ACCESS_LEVELS.includes(declared)) throw new Error(`route ${route.url}: config.access must be one of ${ACCESS_LEVELS.join(', ')}`)
    // a route serving several methods is as strict as its strictest one
    const access = declared ?? (methods.every(m => defaultAccess(m) === 'read') ? 'read' : 'token')
    route.config = { ...route.config, access }
  })

  app.addHook('onRequest', async (request) => {
    const local = isLoopbackAddress(request.socket.remoteAddress ?? '')
    if (init.loopbackOnly) {
      // a web page the gateway's browser opens must not read the API by renaming itself (DNS rebinding)
      const host = hostnameOf(request.headers.host)
      if (host != null && !isLoopbackHostname(host)) throw new ForbiddenHostError(`Host "${host}" is not this machine's loopback name; use 127.0.0.1, [::1] or localhost`)
    }
    const access = request.routeOptions.config?.access ?? defaultAccess(request.method)
    if (access === 'public' || (access === 'read' && local)) return
    const presented = bearer(request)
    const what = `${request.method} ${request.routeOptions.url ?? request.url.split('?')[0]}`
    if (presented == null) {
      throw new UnauthenticatedError(local
        ? `${what} changes this node's state: send "Authorization: Bearer <token>" with the token from the node directory's api.token`
        : `${what} from another machine needs "Authorization: Bearer <token>" with the node's API token`)
    }
    if (!check.matches(presented)) throw new InvalidApiTokenError('the API token is not this node\'s')
  })
}

/** The host name of a Host header, without port or IPv6 brackets. */
function hostnameOf (header: string | undefined): string | undefined {
  if (header == null || header === '') return undefined
  if (header.startsWith('[')) {
    const end = header.indexOf(']')
    return end < 0 ? header : header.slice(1, end)
  }
  const colon = header.lastIndexOf(':')
  return colon < 0 ? header : header.slice(0, colon)
}
