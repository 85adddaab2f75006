import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'

/** HTTP status for each error code the agent's modules raise. */
const STATUS_BY_CODE: Record<string, number> = {
  ERR_INVALID_VALUE: 400,
  ERR_BAD_REQUEST: 400,
  ERR_CONFIG: 400,
  ERR_INVALID_MESSAGE: 400,
  ERR_UNAUTHORIZED_WRITE: 403,
  ERR_BAD_SIGNATURE: 403,
  ERR_CLAIM_MISMATCH: 403,
  ERR_EXPIRED: 403,
  ERR_NOT_FOUND: 404,
  ERR_INVALID_INPUT: 400,
  ERR_INSTANCE_SPEC: 400,
  ERR_BUNDLE_INVALID: 422,
  ERR_MODEL_LOAD: 422,
  ERR_INSTANCE_EXISTS: 409,
  ERR_INSTANCE_STOPPED: 503,
  FST_ERR_CTP_BODY_TOO_LARGE: 413,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 415,
  FST_ERR_CTP_EMPTY_JSON_BODY: 400,
  FST_ERR_CTP_INVALID_JSON_BODY: 400
}

export class BadRequestError extends Error {
  readonly code = 'ERR_BAD_REQUEST'
  override readonly name = 'BadRequestError'
  readonly field: string

  constructor (message: string, field: string) {
    super(message)
    this.field = field
  }
}

export class NotFoundError extends Error {
  readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'NotFoundError'
}

/** The shape of every error body. */
export interface ErrorBody {
  error: string
  code: string
  message: string
  field?: string
}

/**
 * One error handler for the whole API: schema failures become 400 naming
 * the field, known codes map through the catalog, anything else is a 500
 * whose details stay in the log.
 */
export function errorHandler (err: FastifyError & { field?: string }, request: FastifyRequest, reply: FastifyReply): void {
  if (err.validation != null) {
    const v = err.validation[0]
    const base = err.validationContext ?? 'body'
    let field = base + (v?.instancePath ?? '').replaceAll('/', '.')
    let message = v?.message ?? 'is invalid'
    if (v?.keyword === 'additionalProperties') {
      field += `.${String(v.params.additionalProperty)}`
      message = 'is not an allowed field'
    } else if (v?.keyword === 'required') {
      field += `.${String(v.params.missingProperty)}`
      message = 'is required'
    }
    void reply.code(400).send({ error: 'Bad Request', code: 'ERR_VALIDATION', message: `${field}: ${message}`, field } satisfies ErrorBody)
    return
  }
  const status = STATUS_BY_CODE[err.code] ?? (err.statusCode != null && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500)
  // a 503 is a known, temporary condition whose message helps the client; other 5xx details stay in the log
  const internal = status >= 500 && status !== 503
  if (internal) request.log.error({ err }, 'request failed')
  const body: ErrorBody = {
    error: internal ? 'Internal Server Error' : httpReason(status),
    code: err.code ?? 'ERR_INTERNAL',
    message: internal ? 'internal error' : err.message
  }
  if (err.field != null) body.field = err.field
  void reply.code(status).send(body)
}

function httpReason (status: number): string {
  return ({ 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 429: 'Too Many Requests', 503: 'Service Unavailable' } as Record<number, string>)[status] ?? 'Error'
}
