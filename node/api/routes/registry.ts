import { Type, type Static } from '@sinclair/typebox'
import { compile, describeError } from '../../../protocols/schema.ts'
import { KEY_PATTERN, MAX_KEY_LENGTH } from '../../../protocols/registry/wire.ts'
import { BadRequestError, NotFoundError } from '../errors.ts'
import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

const ListQuery = Type.Object({
  prefix: Type.String({ default: '', maxLength: 256 }),
  tombstones: Type.Boolean({ default: false })
}, { additionalProperties: false })

const StampQuery = Type.Object({
  key: Type.String({ minLength: 1, maxLength: MAX_KEY_LENGTH, pattern: KEY_PATTERN })
}, { additionalProperties: false })

const KeyParams = Type.Object({ '*': Type.String({ minLength: 1, maxLength: 256 }) })

const PutBody = Type.Object({
  value: Type.Unknown(),
  /** fleet authorisation for keys this node does not own */
  auth: Type.Optional(Type.String({ minLength: 10, maxLength: 16 * 1024 }))
}, { additionalProperties: false })

const DeleteBody = Type.Object({
  auth: Type.Optional(Type.String({ minLength: 10, maxLength: 16 * 1024 }))
}, { additionalProperties: false })
const validateDeleteBody = compile(DeleteBody)

export async function registryRoutes (app: FastifyInstance, { agent }: { agent: AgentView }): Promise<void> {
  // what a fleet signer binds into an authorisation for a write through this agent: this writer, this stamp
  app.get<{ Querystring: Static<typeof StampQuery> }>('/v1/write-stamp', { schema: { querystring: StampQuery } }, async (request) => {
    return agent.registry.stampFor(request.query.key)
  })

  app.get('/v1/revocations', async () => {
    const revocations = agent.registry.revocations()
    return { revocations, count: revocations.length }
  })

  app.get<{ Querystring: Static<typeof ListQuery> }>('/v1/registry', { schema: { querystring: ListQuery } }, async (request) => {
    const entries = agent.registry.list(request.query.prefix, { tombstones: request.query.tombstones })
    return { entries, count: entries.length }
  })

  app.get<{ Params: Static<typeof KeyParams> }>('/v1/registry/*', { schema: { params: KeyParams } }, async (request) => {
    const entry = agent.registry.get(request.params['*'])
    if (entry == null) throw new NotFoundError(`no registry key ${request.params['*']}`)
    return entry
  })

  app.put<{ Params: Static<typeof KeyParams>, Body: Static<typeof PutBody> }>('/v1/registry/*', { schema: { params: KeyParams, body: PutBody } }, async (request) => {
    const { value, auth } = request.body
    return await agent.registry.set(request.params['*'], value, auth == null ? {} : { auth })
  })

  // a DELETE may come without a body, so its body is checked here rather than by the route schema
  app.delete<{ Params: Static<typeof KeyParams> }>('/v1/registry/*', { schema: { params: KeyParams } }, async (request) => {
    const body = request.body ?? {}
    if (!validateDeleteBody(body)) {
      const { field, message } = describeError('body', validateDeleteBody.errors)
      throw new BadRequestError(message, field)
    }
    const auth = body.auth
    return await agent.registry.delete(request.params['*'], auth == null ? {} : { auth })
  })
}
