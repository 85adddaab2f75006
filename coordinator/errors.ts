import { errorHandler as agentErrorHandler, type ErrorBody } from '../node/api/errors.ts'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'

/** Errors of the coordinator. Match on `code`; HTTP statuses come from STATUS_BY_CODE. */
export class CoordinatorError extends Error {
  readonly code: string = 'ERR_COORDINATOR'
  override readonly name: string = 'CoordinatorError'
  /** the request field at fault, when there is one */
  readonly field?: string

  constructor (message: string, options?: ErrorOptions & { field?: string }) {
    super(message, options)
    if (options?.field != null) this.field = options.field
  }
}

/** Unknown user or wrong password; deliberately the same error for both. */
export class BadCredentialsError extends CoordinatorError {
  override readonly code = 'ERR_BAD_CREDENTIALS'
  override readonly name = 'BadCredentialsError'
}

/** No credentials on a route that needs them. */
export class UnauthenticatedError extends CoordinatorError {
  override readonly code = 'ERR_UNAUTHENTICATED'
  override readonly name = 'UnauthenticatedError'
}

/** A token that does not verify: malformed, tampered, wrong key or algorithm, revoked. */
export class InvalidTokenError extends CoordinatorError {
  override readonly code = 'ERR_TOKEN_INVALID'
  override readonly name = 'InvalidTokenError'
}

export class TokenExpiredError extends CoordinatorError {
  override readonly code = 'ERR_TOKEN_EXPIRED'
  override readonly name = 'TokenExpiredError'
}

/** Authenticated, but the caller's roles do not grant the route's service (or role). */
export class ForbiddenError extends CoordinatorError {
  override readonly code = 'ERR_FORBIDDEN'
  override readonly name = 'ForbiddenError'
}

export class RateLimitedError extends CoordinatorError {
  override readonly code = 'ERR_RATE_LIMITED'
  override readonly name = 'RateLimitedError'
  readonly retryAfterSec: number

  constructor (message: string, retryAfterSec: number) {
    super(message)
    this.retryAfterSec = retryAfterSec
  }
}

export class ConflictError extends CoordinatorError {
  override readonly code = 'ERR_CONFLICT'
  override readonly name = 'ConflictError'
}

export class NotFoundError extends CoordinatorError {
  override readonly code = 'ERR_NOT_FOUND'
  override readonly name = 'NotFoundError'
}

/** A request that passed the schema but makes no sense (e.g. `since` after `until`). */
export class BadRequestError extends CoordinatorError {
  override readonly code = 'ERR_BAD_REQUEST'
  override readonly name = 'BadRequestError'
}

/** A join token that is unknown, wrong, expired or already used. */
export class EnrollmentTokenError extends CoordinatorError {
  override readonly code = 'ERR_ENROLLMENT_TOKEN'
  override readonly name = 'EnrollmentTokenError'
}

/** Too many open event streams, or the mesh is not up yet. */
export class UnavailableError extends CoordinatorError {
  override readonly code = 'ERR_UNAVAILABLE'
  override readonly name = 'UnavailableError'
}

/** An upload past the coordinator's limit. */
export class UploadTooLargeError extends CoordinatorError {
  override readonly code = 'ERR_UPLOAD_TOO_LARGE'
  override readonly name = 'UploadTooLargeError'
}

/** A body in a content type the route does not take. */
export class UnsupportedMediaTypeError extends CoordinatorError {
  override readonly code = 'ERR_MEDIA_TYPE'
  override readonly name = 'UnsupportedMediaTypeError'
}

/** HTTP status of every coordinator error code; the agent's catalog covers the rest. */
export const STATUS_BY_CODE: Record<string, number> = {
  ERR_BAD_REQUEST: 400,
  ERR_BAD_CREDENTIALS: 401,
  ERR_UNAUTHENTICATED: 401,
  ERR_TOKEN_INVALID: 401,
  ERR_TOKEN_EXPIRED: 401,
  ERR_ENROLLMENT_TOKEN: 401,
  ERR_FORBIDDEN: 403,
  ERR_NOT_FOUND: 404,
  ERR_CONFLICT: 409,
  ERR_UPLOAD_TOO_LARGE: 413,
  ERR_MEDIA_TYPE: 415,
  ERR_RATE_LIMITED: 429,
  ERR_UNAVAILABLE: 503
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 429: 'Too Many Requests', 503: 'Service Unavailable' }

/**
 * The coordinator's error handler: its own codes map through the catalog
 * above (with the headers HTTP clients expect); schema failures and
 * everything else go through the agent's handler, so a bad body is a 400
 * naming the field in both APIs.
 */
export function coordinatorErrorHandler (err: FastifyError & { field?: string, retryAfterSec?: number }, request: FastifyRequest, reply: FastifyReply): void {
  const status = err.validation == null ? STATUS_BY_CODE[err.code] : undefined
  if (status == null) {
    agentErrorHandler(err, request, reply)
    return
  }
  if (err.code === 'ERR_UNAUTHENTICATED') void reply.header('www-authenticate', 'Bearer')
  if (err.code === 'ERR_TOKEN_INVALID' || err.code === 'ERR_TOKEN_EXPIRED') void reply.header('www-authenticate', 'Bearer error="invalid_token"')
  if (status === 429 && err.retryAfterSec != null) void reply.header('retry-after', String(err.retryAfterSec))
  const body: ErrorBody = { error: REASONS[status] ?? 'Error', code: err.code, message: err.message }
  if (err.field != null) body.field = err.field
  void reply.code(status).send(body)
}
