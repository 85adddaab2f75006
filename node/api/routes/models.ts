import { DEFAULT_MAX_DEPTH } from '../../../protocols/codec.ts'
import { withinDepth } from '../../../protocols/json-bounds.ts'
import { Type, type Static } from '@sinclair/typebox'
import { BodyTooLargeError } from '../../../protocols/errors.ts'
import { DEFAULT_MAX_PREDICT_BYTES, requestIdAt } from '../../../protocols/predict/index.ts'
import { InvalidInputError, ModelNotFoundError } from '../../runtime/errors.ts'
import { predictLocal, serverTiming } from '../../runtime/serving.ts'
import { retryAfterOf } from '../errors.ts'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { AgentView } from '../server.ts'

/**
 * An `onRequest` hook for predict routes: a declared length past `limit` is
 * a 413 that says the limit, before a byte of the body is read (Fastify's
 * own bodyLimit still stops a chunked body that grows past it).
 */
export function predictLengthCheck (limit: number): (request: FastifyRequest) => Promise<void> {
  return async request => {
    const declared = Number(request.headers['content-length'])
    if (Number.isFinite(declared) && declared > limit) {
      throw new BodyTooLargeError(`body: the predict request is ${declared} bytes; the limit is ${limit} (api.maxPredictBytes)`, declared, limit)
    }
  }
}

const NameParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })
const VersionParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }), version: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })
const TargetParams = Type.Object({ target: Type.String({ minLength: 1, maxLength: 80 }) }, { additionalProperties: false })
const VersionTargetParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }), target: Type.String({ minLength: 1, maxLength: 80 }) }, { additionalProperties: false })

/**
 * TensorFlow Serving's REST dialect: `GET /v1/models/NAME[/versions/V]`
 * (model status; 404 when NAME runs nowhere in the mesh) and
 * `POST /v1/models/NAME[/versions/V]:predict`, answered by the local instance
 * or forwarded over the mesh to a replica (agent.router).
 */
export async function modelRoutes (app: FastifyInstance, { agent, bodyLimit }: { agent: AgentView, bodyLimit?: number }): Promise<void> {
  const local = agent.local
  if (local == null) return
  // predict bodies may carry images; other routes keep the API's smaller limit
  const limit = bodyLimit ?? DEFAULT_MAX_PREDICT_BYTES
  const onRequest = predictLengthCheck(limit)

  // TF Serving clients (and `curl -d`) often send JSON without a JSON content type
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: limit }, (_req, body, done) => {
    // bounded before it is parsed: what walks the value afterwards recurses
    if (!withinDepth(body as string, DEFAULT_MAX_DEPTH)) {
      done(new InvalidInputError(`nests deeper than ${DEFAULT_MAX_DEPTH} levels`, 'body'), undefined)
      return
    }
    try {
      done(null, JSON.parse(body as string))
    } catch {
      done(new InvalidInputError('is not valid JSON', 'body'), undefined)
    }
  })

  const instanceOf = (name: string, version?: string): ReturnType<typeof local.runtime.get> => {
    const instance = local.runtime.get(name)
    if (version != null && instance.version !== version) throw new ModelNotFoundError(`model ${name} runs here in version ${instance.version}, not ${version}`)
    return instance
  }

  app.get<{ Params: Static<typeof NameParams> }>('/v1/models/:name', { schema: { params: NameParams } }, async request => {
    const name = request.params.name
    if (local.runtime.has(name) || agent.router == null) return instanceOf(name).status()
    const status = agent.router.status(name)
    if (status == null) throw new ModelNotFoundError(`model ${name} is not deployed anywhere in the mesh`)
    return status
  })
  app.get<{ Params: Static<typeof VersionParams> }>('/v1/models/:name/versions/:version', { schema: { params: VersionParams } }, async request => instanceOf(request.params.name, request.params.version).status())
  app.get<{ Params: Static<typeof NameParams> }>('/v1/models/:name/metadata', { schema: { params: NameParams } }, async (request, reply) => {
    const name = request.params.name
    if (local.runtime.has(name) || agent.router == null) {
      const instance = instanceOf(name)
      const { version, inputs, outputs, model } = instance.bundle.manifest
      return { model_spec: { name, version }, metadata: { format: model.format, signature_def: { inputs, outputs } } }
    }
    // a model that runs elsewhere: its replica tells its signature
    const answer = await agent.router.predict(name, undefined, null, 'metadata')
    if (answer.status !== 200) return await reply.code(answer.status).send(answer.body)
    const meta = answer.body as { version?: unknown, format?: unknown, inputs?: unknown, outputs?: unknown }
    return { model_spec: { name, version: meta.version }, metadata: { format: meta.format, signature_def: { inputs: meta.inputs, outputs: meta.outputs } } }
  })

  const predict = async (name: string, version: string | undefined, request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const { body } = request
    const requestId = predictRequestId(request)
    void reply.header('x-request-id', requestId)
    if (local.runtime.has(name) || agent.router == null) {
      const start = performance.now()
      const answer = await predictLocal(local.runtime, name, version, body, requestId)
      void reply.header('server-timing', serverTiming(performance.now() - start))
      return answer
    }
    // no replica here: another node answers, and its status and body are relayed as they are
    const answer = await agent.router.predict(name, version, body, undefined, requestId)
    const retryAfter = retryAfterOf(answer.status, answer.body)
    if (retryAfter != null) void reply.header('retry-after', retryAfter)
    return await reply.code(answer.status).send(answer.body)
  }

  // `NAME:predict` is one path segment; the router cannot split it, so the handler does
  const verb = (target: string): string => {
    const i = target.lastIndexOf(':')
    const method = i < 0 ? '' : target.slice(i + 1)
    if (method !== 'predict') throw new ModelNotFoundError(`${i < 0 ? 'no method' : `method :${method}`} on /v1/models/ (this node serves :predict)`)
    return target.slice(0, i)
  }
  // predict changes nothing on the node: like reads, open to local clients (TF Serving clients send no token)
  app.post<{ Params: Static<typeof TargetParams> }>('/v1/models/:target', { schema: { params: TargetParams }, bodyLimit: limit, onRequest, config: { access: 'read' } }, async (request, reply) => await predict(verb(request.params.target), undefined, request, reply))
  app.post<{ Params: Static<typeof VersionTargetParams> }>('/v1/models/:name/versions/:target', { schema: { params: VersionTargetParams }, bodyLimit: limit, onRequest, config: { access: 'read' } }, async (request, reply) => {
    return await predict(request.params.name, verb(request.params.target), request, reply)
  })
}

/**
 * A predict's request id, assigned once where it enters: the client's
 * `Idempotency-Key` (or `X-Request-Id`), so a client that sends the same
 * request again has its actions dropped as repeats, else a fresh one. The
 * answer carries it back as `X-Request-Id`.
 */
export function predictRequestId (request: FastifyRequest): string {
  const key = request.headers['idempotency-key']
  if (key != null) return requestIdAt(key, 'headers.idempotency-key')
  return requestIdAt(request.headers['x-request-id'], 'headers.x-request-id')
}
