import { Type, type Static } from '@sinclair/typebox'
import { principalOf } from '../auth/plugin.ts'
import { NotFoundError } from '../errors.ts'
import { errorResponses, NoQuery, Password, Roles, Username } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

const NewUserBody = Type.Object({
  username: Username,
  password: Password,
  roles: Roles
}, { additionalProperties: false })

const ChangeUserBody = Type.Object({
  password: Type.Optional(Password),
  roles: Type.Optional(Roles),
  disabled: Type.Optional(Type.Boolean())
}, { additionalProperties: false, minProperties: 1 })

const UserParams = Type.Object({ username: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })

const tags = ['users']
const config = { service: 'users' as const }

/** Users CRUD, for holders of the `users` service (admins). */
export async function userRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { users, auth, logger } = ctx

  app.get('/api/v1/users', {
    config,
    schema: { tags, summary: 'List users', querystring: NoQuery, response: { 200: Type.Object({ users: Type.Array(Type.Ref('User')) }), ...errorResponses(401, 403) } }
  }, async () => ({ users: users.list() }))

  app.post<{ Body: Static<typeof NewUserBody> }>('/api/v1/users', {
    config,
    schema: { tags, summary: 'Create a user', querystring: NoQuery, body: NewUserBody, response: { 201: Type.Ref('User'), ...errorResponses(400, 401, 403, 409) } }
  }, async (request, reply) => {
    const user = await users.create(request.body)
    logger.info({ user: user.username, roles: user.roles, by: principalOf(request).name }, 'user created')
    return await reply.code(201).send(user)
  })

  app.get<{ Params: Static<typeof UserParams> }>('/api/v1/users/:username', {
    config,
    schema: { tags, summary: 'One user', params: UserParams, querystring: NoQuery, response: { 200: Type.Ref('User'), ...errorResponses(401, 403, 404) } }
  }, async (request) => {
    const user = users.list().find(u => u.username === request.params.username)
    if (user == null) throw new NotFoundError(`no user ${request.params.username}`)
    return user
  })

  app.patch<{ Params: Static<typeof UserParams>, Body: Static<typeof ChangeUserBody> }>('/api/v1/users/:username', {
    config,
    schema: {
      tags,
      summary: 'Change a user\'s password, roles or disabled flag',
      description: 'Any change ends the user\'s sessions: their access tokens stop working at once.',
      params: UserParams,
      querystring: NoQuery,
      body: ChangeUserBody,
      response: { 200: Type.Ref('User'), ...errorResponses(400, 401, 403, 404, 409) }
    }
  }, async (request) => {
    const user = await users.update(request.params.username, request.body)
    await auth.userChanged(user.username)
    logger.info({ user: user.username, fields: Object.keys(request.body), by: principalOf(request).name }, 'user changed')
    return user
  })

  app.delete<{ Params: Static<typeof UserParams> }>('/api/v1/users/:username', {
    config,
    schema: { tags, summary: 'Delete a user', params: UserParams, querystring: NoQuery, response: { 204: Type.Null(), ...errorResponses(401, 403, 404, 409) } }
  }, async (request, reply) => {
    await users.delete(request.params.username)
    await auth.userChanged(request.params.username)
    logger.info({ user: request.params.username, by: principalOf(request).name }, 'user deleted')
    return await reply.code(204).send()
  })
}
