import { Type } from '@sinclair/typebox'
import { LabelsSchema } from '../../node/config/schema.ts'
import { MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from '../auth/passwords.ts'
import { ROLES, SERVICES } from '../auth/roles.ts'
import { USERNAME_PATTERN } from '../auth/users.ts'

/** For routes that take no query parameters: any parameter is a 400. */
export const NoQuery = Type.Object({}, { additionalProperties: false })

export const ErrorBody = Type.Object({
  error: Type.String(),
  code: Type.String(),
  message: Type.String(),
  field: Type.Optional(Type.String())
}, { $id: 'Error', description: 'Every error: `code` is stable, `field` names the request field at fault.' })

export const errorResponses = (...statuses: number[]): Record<number, unknown> =>
  Object.fromEntries(statuses.map(s => [s, Type.Ref('Error')]))

export const Role = Type.Union(ROLES.map(r => Type.Literal(r)))
export const Service = Type.Union(SERVICES.map(s => Type.Literal(s)))
export const Roles = Type.Array(Role, { minItems: 1, maxItems: ROLES.length, uniqueItems: true })

export const Username = Type.String({ pattern: USERNAME_PATTERN, description: 'lower-case letters, digits and . _ @ -' })
export const Password = Type.String({ minLength: MIN_PASSWORD_LENGTH, maxLength: MAX_PASSWORD_LENGTH })

export const PublicUser = Type.Object({
  username: Type.String(),
  roles: Type.Array(Role),
  disabled: Type.Boolean(),
  createdAt: Type.Integer(),
  updatedAt: Type.Integer()
}, { $id: 'User' })

export const Session = Type.Object({
  token: Type.String({ description: 'EdDSA JWT access token; send as `Authorization: Bearer <token>`' }),
  expiresAt: Type.Integer({ description: 'ms since epoch' }),
  refreshToken: Type.String({ description: 'one-time refresh token for POST /api/v1/auth/refresh' }),
  refreshExpiresAt: Type.Integer(),
  user: Type.Ref('User'),
  roles: Type.Array(Role),
  services: Type.Array(Service)
}, { $id: 'Session' })

export const Labels = LabelsSchema

/** Shapes shown in the OpenAPI document for the fleet views. */
export const NodeViewSchema = Type.Object({
  peerId: Type.String(),
  role: Type.Union([Type.String(), Type.Null()]),
  labels: Type.Record(Type.String(), Type.String()),
  state: Type.Union([Type.Literal('alive'), Type.Literal('suspect'), Type.Literal('dead')]),
  since: Type.Integer(),
  self: Type.Boolean(),
  addresses: Type.Array(Type.String()),
  version: Type.Union([Type.String(), Type.Null()]),
  backend: Type.Union([Type.String(), Type.Null()]),
  startedAt: Type.Union([Type.Integer(), Type.Null()]),
  sensors: Type.Array(Type.Object({
    id: Type.String(),
    type: Type.String(),
    unit: Type.Optional(Type.String()),
    geo: Type.Optional(Type.Unknown())
  })),
  health: Type.Union([Type.Object({
    cpuPct: Type.Number(),
    processCpuPct: Type.Number(),
    rssBytes: Type.Number(),
    memFreeBytes: Type.Number(),
    memTotalBytes: Type.Number(),
    load: Type.Array(Type.Number()),
    uptimeSec: Type.Number(),
    ts: Type.Number()
  }), Type.Null()]),
  clock: Type.Object({
    /** the node's wall clock minus the coordinator's, whole seconds (for the coordinator itself: its own against the fleet) */
    offsetSec: Type.Union([Type.Integer(), Type.Null()]),
    skewed: Type.Boolean()
  }),
  instances: Type.Object({ total: Type.Integer(), running: Type.Integer(), failed: Type.Integer() })
}, { $id: 'Node' })

export const InstanceViewSchema = Type.Object({
  node: Type.String(),
  id: Type.String(),
  model: Type.String(),
  version: Type.Union([Type.String(), Type.Null()]),
  state: Type.String(),
  reason: Type.Union([Type.String(), Type.Null()]),
  backend: Type.Union([Type.String(), Type.Null()]),
  startedAt: Type.Union([Type.Integer(), Type.Null()]),
  updatedAt: Type.Integer()
}, { $id: 'Instance' })

/** Registered once on the app so routes can `$ref` them and /docs lists them. */
export const SHARED_SCHEMAS = [ErrorBody, PublicUser, Session, NodeViewSchema, InstanceViewSchema]
