import { Type, type Static } from '@sinclair/typebox'
import { retryAfterOf } from '../../node/api/errors.ts'
import { predictLengthCheck, predictRequestId } from '../../node/api/routes/models.ts'
import { NotFoundError } from '../errors.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance, FastifyReply } from 'fastify'

const Target = Type.Object({ target: Type.String({ minLength: 1, maxLength: 80, pattern: '^[a-z0-9][a-z0-9._-]*:[a-z]+$', description: 'NAME:predict' }) }, { additionalProperties: false })
const VersionTarget = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' }), target: Type.String({ minLength: 1, maxLength: 80, pattern: '^[A-Za-z0-9][A-Za-z0-9.+_-]*:[a-z]+$', description: 'VERSION:predict' }) }, { additionalProperties: false })

/** TensorFlow Serving's predict request: row (`instances`) or columnar (`inputs`). */
const PredictBody = Type.Object({
  signature_name: Type.Optional(Type.String({ maxLength: 128 })),
  instances: Type.Optional(Type.Array(Type.Unknown())),
  inputs: Type.Optional(Type.Unknown())
}, { additionalProperties: false })

/** A replica's answer as it came, with Retry-After when a model was still loading. */
async function relay (reply: FastifyReply, answer: { status: number, body: unknown }): Promise<FastifyReply> {
  const retryAfter = retryAfterOf(answer.status, answer.body)
  if (retryAfter != null) void reply.header('retry-after', retryAfter)
  return await reply.code(answer.status).send(answer.body)
}

function split (target: string): string {
  const i = target.lastIndexOf(':')
  if (target.slice(i + 1) !== 'predict') throw new NotFoundError(`method :${target.slice(i + 1)} on /api/v1/models/ (the coordinator serves :predict)`)
  return target.slice(0, i)
}

/**
 * Predict through the coordinator, for users with the `predict` service:
 * the request goes to the embedded agent's router, which forwards it over
 * the mesh to a replica (balanced, retried on another when one fails) and
 * relays its answer as it is. Bodies may carry images: the limit is the
 * embedded agent's `api.maxPredictBytes`, the same at every hop, and a body
 * past it is a 413 here, never a replica's failure.
 */
export async function predictRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const predict = ctx.predict
  if (predict == null) return
  const bodyLimit = ctx.predictBodyLimit
  const onRequest = predictLengthCheck(bodyLimit)
  const schema = (params: typeof Target | typeof VersionTarget) => ({
    tags: ['predict'],
    summary: 'TensorFlow Serving predict, answered by a replica anywhere in the mesh',
    params,
    querystring: NoQuery,
    body: PredictBody,
    response: { 200: { description: '{"predictions": [...]}', type: 'object', additionalProperties: true }, ...errorResponses(400, 401, 403, 404, 413, 503) }
  })

  app.post<{ Params: Static<typeof Target>, Body: Static<typeof PredictBody> }>('/api/v1/models/:target', {
    config: { service: 'predict' },
    bodyLimit,
    onRequest,
    schema: schema(Target)
  }, async (request, reply) => {
    const requestId = predictRequestId(request)
    void reply.header('x-request-id', requestId)
    const answer = await predict(split(request.params.target), undefined, request.body, requestId)
    return await relay(reply, answer)
  })

  app.post<{ Params: Static<typeof VersionTarget>, Body: Static<typeof PredictBody> }>('/api/v1/models/:name/versions/:target', {
    config: { service: 'predict' },
    bodyLimit,
    onRequest,
    schema: schema(VersionTarget)
  }, async (request, reply) => {
    const requestId = predictRequestId(request)
    void reply.header('x-request-id', requestId)
    const answer = await predict(request.params.name, split(request.params.target), request.body, requestId)
    return await relay(reply, answer)
  })
}
