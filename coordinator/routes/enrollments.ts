import { Type, type Static } from '@sinclair/typebox'
import { EnrolledSchema, EnrollRoleSchema as EnrollRole, ENROLL_PATH } from '../../protocols/enrollment/index.ts'
import { principalOf } from '../auth/plugin.ts'
import { errorResponses, Labels, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { FastifyInstance } from 'fastify'

const NewEnrollmentBody = Type.Object({
  role: EnrollRole,
  labels: Type.Optional(Labels),
  /** @default 86400 (one day) */
  ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 30 * 86400 })),
  /** @default 365 */
  certValidDays: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 }))
}, { additionalProperties: false })

const Enrollment = Type.Object({
  id: Type.String(),
  role: EnrollRole,
  labels: Type.Record(Type.String(), Type.String()),
  certValidDays: Type.Integer(),
  createdBy: Type.String(),
  createdAt: Type.Integer(),
  expiresAt: Type.Integer(),
  usedAt: Type.Union([Type.Integer(), Type.Null()]),
  usedBy: Type.Union([Type.String(), Type.Null()])
})

const RedeemBody = Type.Object({
  token: Type.String({ minLength: 1, maxLength: 128 }),
  peerId: Type.String({ minLength: 10, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' }),
  role: EnrollRole,
  labels: Labels,
  proof: Type.String({ minLength: 16, maxLength: 256, pattern: '^[A-Za-z0-9_-]+$' })
}, { additionalProperties: false })

const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false })

const tags = ['enrollment']
const adminOnly = { service: 'nodes' as const, roles: ['admin' as const] }

/**
 * Enrollment: admins make one-time join tokens; a device trades one for
 * its certificate and config (`gatemesh enroll`). The redeeming call is
 * authenticated by the token itself and rate-limited per address.
 */
export async function enrollmentRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { enrollment, metrics, logger } = ctx

  app.post<{ Body: Static<typeof NewEnrollmentBody> }>('/api/v1/enrollments', {
    config: adminOnly,
    schema: {
      tags,
      summary: 'Create a one-time, expiring join token for a gateway or server',
      description: 'The token is in this response only. Give it to `gatemesh enroll --coordinator URL --token T --data DIR`.',
      querystring: NoQuery,
      body: NewEnrollmentBody,
      response: { 201: Type.Object({ token: Type.String(), enrollment: Enrollment }), ...errorResponses(400, 401, 403) }
    }
  }, async (request, reply) => {
    const by = principalOf(request).name
    const created = await enrollment.create({ ...request.body, createdBy: by })
    logger.info({ enrollment: created.enrollment.id, role: created.enrollment.role, by }, 'join token created')
    return await reply.code(201).send(created)
  })

  app.get('/api/v1/enrollments', {
    config: adminOnly,
    schema: { tags, summary: 'Join tokens with their state (never their secrets)', querystring: NoQuery, response: { 200: Type.Object({ enrollments: Type.Array(Enrollment) }), ...errorResponses(401, 403) } }
  }, async () => ({ enrollments: await enrollment.list() }))

  app.delete<{ Params: Static<typeof IdParams> }>('/api/v1/enrollments/:id', {
    config: adminOnly,
    schema: { tags, summary: 'Revoke a join token', params: IdParams, querystring: NoQuery, response: { 204: Type.Null(), ...errorResponses(401, 403, 404) } }
  }, async (request, reply) => {
    await enrollment.revoke(request.params.id)
    return await reply.code(204).send()
  })

  app.post<{ Body: Static<typeof RedeemBody> }>(ENROLL_PATH, {
    config: { public: true, rateLimit: { max: 20, timeWindow: 60_000 } },
    schema: {
      tags,
      summary: 'Redeem a join token: a device\'s peer id in, its certificate and config out',
      description: '`proof` is the base64url Ed25519 signature by the peer key over `gatemesh-enroll/1:<token id>:<peerId>`. The response holds the fleet\'s network key: use TLS.',
      querystring: NoQuery,
      body: RedeemBody,
      response: { 200: EnrolledSchema, ...errorResponses(400, 401, 403, 429) }
    }
  }, async (request) => {
    try {
      const enrolled = await enrollment.redeem(request.body)
      metrics.enrollments.inc({ result: 'enrolled' })
      logger.info({ peer: enrolled.peerId, role: enrolled.role, labels: enrolled.labels, ip: request.ip }, 'node enrolled')
      return enrolled
    } catch (err: any) {
      metrics.enrollments.inc({ result: 'refused' })
      logger.warn({ peer: request.body.peerId, ip: request.ip, reason: err.message }, 'enrollment refused')
      throw err
    }
  })
}
