import { RelayedError } from '../node/api/grpc/errors.ts'
import { STATUS_BY_CODE } from './errors.ts'
import type { Auth } from './auth/auth.ts'
import type { Metadata } from '@grpc/grpc-js'

/**
 * The coordinator's gRPC calls authenticate as its REST calls do: a bearer
 * token (an access JWT or a gmt_ API token) in the `authorization` metadata,
 * verified by the same Auth, whose roles must grant the `predict` service.
 * Refusals come out as UNAUTHENTICATED or PERMISSION_DENIED.
 */
export function grpcAuthorizer (auth: Pick<Auth, 'principal'>): (metadata: Metadata) => Promise<void> {
  return async metadata => {
    const values = metadata.get('authorization')
    const header = values.length === 1 && typeof values[0] === 'string' ? values[0] : undefined
    let services: string[]
    try {
      services = (await auth.principal(header)).services
    } catch (err: any) {
      throw new RelayedError(STATUS_BY_CODE[err.code] ?? 401, { code: err.code, message: err.message })
    }
    if (!services.includes('predict')) throw new RelayedError(403, { code: 'ERR_FORBIDDEN', message: 'your roles do not grant the predict service' })
  }
}
