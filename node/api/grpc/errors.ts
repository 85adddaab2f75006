import { status as Status } from '@grpc/grpc-js'
import { errorReply } from '../errors.ts'

/** A failed answer relayed from another node (or the coordinator's auth): an HTTP status and its error body. */
export class RelayedError extends Error {
  readonly status: number
  readonly body: unknown
  constructor (status: number, body: unknown) {
    const b = body as { message?: unknown } | null
    super(typeof b?.message === 'string' ? b.message : `HTTP ${status}`)
    this.status = status
    this.body = body
  }
}

/** gRPC status for each HTTP status the APIs answer with: one catalog for REST and gRPC. */
const GRPC_OF_HTTP: Record<number, Status> = {
  400: Status.INVALID_ARGUMENT,
  401: Status.UNAUTHENTICATED,
  403: Status.PERMISSION_DENIED,
  404: Status.NOT_FOUND,
  409: Status.ALREADY_EXISTS,
  413: Status.RESOURCE_EXHAUSTED,
  422: Status.FAILED_PRECONDITION,
  429: Status.RESOURCE_EXHAUSTED,
  502: Status.UNAVAILABLE,
  503: Status.UNAVAILABLE,
  504: Status.DEADLINE_EXCEEDED,
  507: Status.RESOURCE_EXHAUSTED
}

/**
 * Any error of ours as a gRPC status: through the agent's HTTP catalog
 * (errorReply), so a bad input is INVALID_ARGUMENT naming the input as its
 * REST twin is a 400 naming it, a missing model NOT_FOUND, a loading one
 * UNAVAILABLE with a `retry-after` trailer.
 */
export function grpcError (err: unknown): { code: Status, details: string, retryAfterSec?: number } {
  let status: number
  let body: { message?: string, retryAfterSec?: number }
  if (err instanceof RelayedError) {
    status = err.status
    body = (err.body ?? {}) as typeof body
  } else {
    ({ status, body } = errorReply(err as Parameters<typeof errorReply>[0]))
  }
  const code = GRPC_OF_HTTP[status] ?? (status >= 500 ? Status.INTERNAL : Status.UNKNOWN)
  const details = typeof body.message === 'string' ? body.message : 'internal error'
  return { code, details, ...(typeof body.retryAfterSec === 'number' ? { retryAfterSec: body.retryAfterSec } : {}) }
}
