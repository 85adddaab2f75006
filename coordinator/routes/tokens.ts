import { Type, type Static } from '@sinclair/typebox'
import { principalOf } from '../auth/plugin.ts'
import { errorResponses, NoQuery, Role, Roles } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

const NewTokenBody = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9 ._-]*$' }),
  roles: Roles,
  /** omitted: valid until revoked */
  ttlDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 }))
}, { additionalProperties: false })

const ApiToken = Type.Object({
  id: Type.String(),
  name: Type.String(),
  roles: Type.Array(Role),
  createdBy: Type.String(),
  createdAt: Type.Integer(),
  expiresAt: Type.Union([Type.Integer(), Type.Null()]),
  lastUsedAt: Type.Union([Type.Integer(), Type.Null()])
})

const TokenParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })

const tags = ['tokens']
const config = { service: 'users' as const }

/** API tokens for machines: long-lived, revocable, shown once, stored hashed. */
export async function tokenRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { apiTokens, logger } = ctx

  app.get('/api/v1/tokens', {
    config,
    schema: { tags, summary: 'List API tokens (never their secrets)', querystring: NoQuery, response: { 200: Type.Object({ tokens: Type.Array(ApiToken) }), ...errorResponses(401, 403) } }
  }, async () => ({ tokens: apiTokens.list() }))

  app.post<{ Body: Static<typeof NewTokenBody> }>('/api/v1/tokens', {
    config,
    schema: {
      tags,
      summary: 'Create an API token',
      description: 'The token is in this response only; send it as `Authorization: Bearer gmt_…`.',
      querystring: NoQuery,
      body: NewTokenBody,
      response: { 201: Type.Object({ token: Type.String(), apiToken: ApiToken }), ...errorResponses(400, 401, 403) }
    }
  }, async (request, reply) => {
    const by = principalOf(request).name
    const { token, record } = await apiTokens.create({ ...request.body, createdBy: by })
    logger.info({ tokenId: record.id, name: record.name, roles: record.roles, by }, 'API token created')
    return await reply.code(201).send({ token, apiToken: record })
  })

  app.delete<{ Params: Static<typeof TokenParams> }>('/api/v1/tokens/:id', {
    config,
    schema: { tags, summary: 'Revoke an API token', params: TokenParams, querystring: NoQuery, response: { 204: Type.Null(), ...errorResponses(401, 403, 404) } }
  }, async (request, reply) => {
    await apiTokens.revoke(request.params.id)
    logger.info({ tokenId: request.params.id, by: principalOf(request).name }, 'API token revoked')
    return await reply.code(204).send()
  })
}
