import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'

/** HTTP status for each error code the agent's modules raise. */
const STATUS_BY_CODE: Record<string, number> = {
  ERR_INVALID_VALUE: 400,
  ERR_BAD_REQUEST: 400,
  ERR_CONFIG: 400,
  ERR_INVALID_MESSAGE: 400,
  ERR_UNAUTHENTICATED: 401,
  ERR_TOKEN_INVALID: 401,
  ERR_FORBIDDEN_HOST: 403,
  ERR_UNAUTHORIZED_WRITE: 403,
  ERR_STALE_WRITE: 409,
  ERR_QUOTA_EXCEEDED: 429,
  ERR_CLOCK_DRIFT: 400,
  ERR_INVALID_TIMESTAMP: 400,
  ERR_BAD_SIGNATURE: 403,
  ERR_CLAIM_MISMATCH: 403,
  ERR_EXPIRED: 403,
  ERR_NOT_FOUND: 404,
  ERR_INVALID_INPUT: 400,
  ERR_INSTANCE_SPEC: 400,
  ERR_DEPLOYMENT_SPEC: 400,
  ERR_BUNDLE_INVALID: 422,
  ERR_MODEL_LOAD: 422,
  ERR_MODEL_FORMAT: 422,
  ERR_MODEL_SPEC: 400,
  ERR_MODEL_CHECK_LIMIT: 422,
  ERR_MODEL_LOADING: 503,
  ERR_RUNTIME_UNAVAILABLE: 503,
  ERR_INSTANCE_EXISTS: 409,
  ERR_INSTANCE_CHANGED: 409,
  ERR_INSTANCE_STOPPED: 503,
  FST_ERR_CTP_BODY_TOO_LARGE: 413,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 415,
  FST_ERR_CTP_EMPTY_JSON_BODY: 400,
  FST_ERR_CTP_INVALID_JSON_BODY: 400,
  // bundles: unusable archives are 422 naming the entry; signatures 403
  ERR_BUNDLE_SIGNATURE: 403,
  ERR_BUNDLE_NOT_FOUND: 404,
  ERR_UPLOAD_TOO_LARGE: 413,
  ERR_CORRUPT_ARCHIVE: 422,
  ERR_PATH_TRAVERSAL: 422,
  ERR_INVALID_ENTRY_NAME: 422,
  ERR_LINK_ENTRY: 422,
  ERR_DUPLICATE_ENTRY: 422,
  ERR_UNLISTED_ENTRY: 422,
  ERR_MISSING_ENTRY: 422,
  ERR_SIZE_MISMATCH: 422,
  ERR_HASH_MISMATCH: 422,
  ERR_ARCHIVE_LIMIT: 422,
  ERR_UNSUPPORTED_ENTRY: 422,
  ERR_INVALID_MANIFEST: 422,
  ERR_NO_PROVIDERS: 504,
  ERR_NO_REPLICA: 503,
  ERR_TRANSFER_FAILED: 502,
  ERR_STORE_FULL: 507,
  // storage: a full disk refuses writes (reads go on); a bundle that cannot fit is refused before it starts
  ERR_DISK_FULL: 507,
  ERR_INSUFFICIENT_SPACE: 507,
  ENOSPC: 507,
  // predict bodies past the configured limit, at any hop; answers too large to relay; a replica at its budget
  ERR_BODY_TOO_LARGE: 413,
  ERR_REPLY_TOO_LARGE: 502,
  ERR_OVERLOADED: 503,
  ERR_TOO_MANY_STREAMS: 429
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

/** A route that needs the node's API token was called without one. */
export class UnauthenticatedError extends Error {
  readonly code = 'ERR_UNAUTHENTICATED'
  override readonly name = 'UnauthenticatedError'
}

/** A token was sent, but it is not this node's. */
export class InvalidApiTokenError extends Error {
  readonly code = 'ERR_TOKEN_INVALID'
  override readonly name = 'InvalidApiTokenError'
}

/** A request to the loopback-only API named a host that is not loopback (DNS rebinding). */
export class ForbiddenHostError extends Error {
  readonly code = 'ERR_FORBIDDEN_HOST'
  override readonly name = 'ForbiddenHostError'
}

export class NotFoundError extends Error {
  readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'NotFoundError'
}

/** More event streams than the route allows are open; try again later (Retry-After). */
export class TooManyStreamsError extends Error {
  readonly code = 'ERR_TOO_MANY_STREAMS'
  override readonly name = 'TooManyStreamsError'
}

/** The shape of every error body. */
export interface ErrorBody {
  error: string
  code: string
  message: string
  field?: string
  /** the archive entry at fault (bundle errors) */
  entry?: string
  /** when to ask again (a model still loading): also sent as the Retry-After header */
  retryAfterSec?: number
}

/**
 * One error handler for the whole API: schema failures become 400 naming
 * the field, known codes map through the catalog, anything else is a 500
 * whose details stay in the log.
 */
export function errorHandler (err: FastifyError & { field?: string, entry?: string }, request: FastifyRequest, reply: FastifyReply): void {
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
  const { status, body } = errorReply(err)
  if (status === 401) void reply.header('www-authenticate', 'Bearer realm="gatemesh-agent"')
  if (body.retryAfterSec != null) void reply.header('retry-after', String(body.retryAfterSec))
  if (status >= 500 && STATUS_BY_CODE[err.code] == null) request.log.error({ err }, 'request failed')
  void reply.code(status).send(body)
}

/** Status and body for an error raised anywhere in the agent (also used for forwarded predicts). */
export function errorReply (err: { code?: string, statusCode?: number, message?: string, field?: string, entry?: string, retryAfterSec?: number }): { status: number, body: ErrorBody } {
  const known = err.code != null && STATUS_BY_CODE[err.code] != null
  const status = (known ? STATUS_BY_CODE[err.code!] : undefined) ?? (err.statusCode != null && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500)
  const body: ErrorBody = {
    error: status >= 500 && !known ? 'Internal Server Error' : httpReason(status),
    code: err.code ?? 'ERR_INTERNAL',
    message: status >= 500 && !known ? 'internal error' : (err.message ?? '')
  }
  if (err.field != null) body.field = err.field
  if (err.entry != null) body.entry = err.entry
  if (known && typeof err.retryAfterSec === 'number') body.retryAfterSec = err.retryAfterSec
  return { status, body }
}

/**
 * The Retry-After header for a relayed answer (a predict another node
 * answered), from its error body. Bodies from the mesh are data: only a
 * small whole number of seconds is passed on.
 */
export function retryAfterOf (status: number, body: unknown): string | undefined {
  if (status !== 503 || body == null || typeof body !== 'object') return undefined
  const sec = (body as { retryAfterSec?: unknown }).retryAfterSec
  return typeof sec === 'number' && Number.isInteger(sec) && sec > 0 && sec <= 3600 ? String(sec) : undefined
}

function httpReason (status: number): string {
  return ({ 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 429: 'Too Many Requests', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout', 507: 'Insufficient Storage' } as Record<number, string>)[status] ?? 'Error'
}
