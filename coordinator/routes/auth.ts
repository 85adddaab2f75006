import { Type, type Static } from '@sinclair/typebox'
import { principalOf } from '../auth/plugin.ts'
import { BadCredentialsError, RateLimitedError } from '../errors.ts'
import { errorResponses, NoQuery, Password, Role, Service } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { LoginLimiter } from '../auth/login-limiter.ts'
import type { FastifyInstance } from 'fastify'

const LoginBody = Type.Object({
  // checked for length only: an unknown-format username must fail like any unknown user
  username: Type.String({ minLength: 1, maxLength: 128 }),
  password: Type.String({ minLength: 1, maxLength: 1024 })
}, { additionalProperties: false })

const RefreshBody = Type.Object({
  refreshToken: Type.String({ minLength: 1, maxLength: 256 })
}, { additionalProperties: false })

const PasswordBody = Type.Object({
  currentPassword: Type.String({ minLength: 1, maxLength: 1024 }),
  newPassword: Password
}, { additionalProperties: false })

const Me = Type.Object({
  kind: Type.Union([Type.Literal('user'), Type.Literal('token')]),
  name: Type.String(),
  roles: Type.Array(Role),
  services: Type.Array(Service),
  expiresAt: Type.Union([Type.Integer(), Type.Null()])
})

const tags = ['auth']

export async function authRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { auth, users, metrics, logger } = ctx
  const limiter: LoginLimiter = ctx.loginLimiter

  /** Count the attempt (durably) before any password is checked, or refuse it with 429 and Retry-After. */
  const admit = async (username: string, ip: string): Promise<{ succeeded: () => Promise<void>, failed: () => Promise<void> }> => {
    const attempt = limiter.begin(username, ip)
    if (!attempt.allowed) {
      metrics.logins.inc({ result: 'limited' })
      logger.warn({ user: username.slice(0, 128), ip, limit: attempt.reason, retryAfterSec: attempt.retryAfterSec }, 'login refused: too many failures')
      throw new RateLimitedError(`too many failed logins; try again in ${attempt.retryAfterSec} s`, attempt.retryAfterSec)
    }
    await limiter.flush()
    metrics.passwordChecks.inc()
    return attempt
  }

  app.post<{ Body: Static<typeof LoginBody> }>('/api/v1/auth/login', {
    config: { public: true },
    schema: {
      tags,
      summary: 'Log in with a username and password',
      description: 'A wrong password and an unknown user get the same 401. Every attempt counts as a failure before the password is checked (refunded when it was right): an address gets a few attempts per username, then waits twice as long after each failure; an address also has a ceiling across usernames, and a username one across addresses that never logged in as it. Refused attempts are 429 with Retry-After, and the counters survive restarts.',
      querystring: NoQuery,
      body: LoginBody,
      response: { 200: Type.Ref('Session'), ...errorResponses(400, 401, 429) }
    }
  }, async (request) => {
    const { username, password } = request.body
    const attempt = await admit(username, request.ip)
    try {
      const session = await auth.login(username, password)
      await attempt.succeeded()
      metrics.logins.inc({ result: 'success' })
      logger.info({ user: username, ip: request.ip }, 'login')
      return session
    } catch (err) {
      if (!(err instanceof BadCredentialsError)) throw err
      await attempt.failed()
      metrics.logins.inc({ result: 'failure' })
      logger.warn({ user: username.slice(0, 128), ip: request.ip }, 'login failed')
      throw err
    }
  })

  app.post<{ Body: Static<typeof RefreshBody> }>('/api/v1/auth/refresh', {
    config: { public: true, rateLimit: { max: 60, timeWindow: 60_000 } },
    schema: {
      tags,
      summary: 'Trade a refresh token for a new access token and refresh token',
      description: 'Refresh tokens are single-use. Presenting a used one revokes every session descending from the same login.',
      querystring: NoQuery,
      body: RefreshBody,
      response: { 200: Type.Ref('Session'), ...errorResponses(400, 401, 429) }
    }
  }, async (request) => await auth.refresh(request.body.refreshToken))

  app.post<{ Body: Static<typeof RefreshBody> }>('/api/v1/auth/logout', {
    config: { public: true, rateLimit: { max: 60, timeWindow: 60_000 } },
    schema: {
      tags,
      summary: 'Revoke a refresh token and every token of its login',
      querystring: NoQuery,
      body: RefreshBody,
      response: { 204: Type.Null(), ...errorResponses(400, 429) }
    }
  }, async (request, reply) => {
    await auth.logout(request.body.refreshToken)
    return await reply.code(204).send()
  })

  app.get('/api/v1/auth/me', {
    config: { service: 'authenticated' },
    schema: { tags, summary: 'Who the bearer token belongs to, with roles and services', querystring: NoQuery, response: { 200: Me, ...errorResponses(401) } }
  }, async (request) => {
    const p = principalOf(request)
    return { kind: p.kind, name: p.name, roles: p.roles, services: p.services, expiresAt: p.expiresAt }
  })

  app.post<{ Body: Static<typeof PasswordBody> }>('/api/v1/auth/password', {
    config: { service: 'authenticated' },
    schema: {
      tags,
      summary: 'Change your own password',
      description: 'Ends every session of the user, this one included: log in again with the new password.',
      querystring: NoQuery,
      body: PasswordBody,
      response: { 204: Type.Null(), ...errorResponses(400, 401, 429) }
    }
  }, async (request, reply) => {
    const p = principalOf(request)
    if (p.kind !== 'user') throw new BadCredentialsError('API tokens have no password')
    const attempt = await admit(p.name, request.ip)
    if (await users.authenticate(p.name, request.body.currentPassword) == null) {
      await attempt.failed()
      throw new BadCredentialsError('current password is wrong')
    }
    await attempt.succeeded()
    await users.update(p.name, { password: request.body.newPassword })
    await auth.userChanged(p.name)
    logger.info({ user: p.name }, 'password changed')
    return await reply.code(204).send()
  })
}
