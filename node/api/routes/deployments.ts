import { Type, type Static } from '@sinclair/typebox'
import { deploymentKey } from '../../scheduler/keys.ts'
import { parseDeploymentSpec, type ParseOptions } from '../../scheduler/spec.ts'
import { deploymentStatuses } from '../../scheduler/status.ts'
import { BadRequestError, NotFoundError } from '../errors.ts'
import type { NodeControl, NodeControlState } from '../../scheduler/control.ts'
import type { Election } from '../../scheduler/election.ts'
import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

/** What the deployment routes need beyond the registry. */
export interface SchedulingView {
  election: Pick<Election, 'leader' | 'zone' | 'isLeader' | 'leaderOf' | 'followed' | 'status'>
  control: Pick<NodeControl, 'setDrained' | 'setExcluded' | 'state'>
  parseOptions: ParseOptions
}

const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' }) }, { additionalProperties: false })
const Auth = Type.String({ minLength: 10, maxLength: 16 * 1024 })
const PutBody = Type.Object({ spec: Type.Unknown(), auth: Auth }, { additionalProperties: false })
const DeleteBody = Type.Object({ auth: Auth }, { additionalProperties: false })

/**
 * Deployments peer to peer: any agent accepts a fleet-signed spec and
 * writes it to the registry, from where every scheduler and agent sees it.
 * No coordinator is involved.
 */
export async function deploymentRoutes (app: FastifyInstance, { agent, scheduling }: { agent: AgentView, scheduling: SchedulingView }): Promise<void> {
  const statuses = () => {
    const states = new Map(agent.members().map(m => [m.peerId, m.state]))
    const keeps = agent.registry.keepsZoneOf?.bind(agent.registry)
    return deploymentStatuses(agent.registry, scheduling.election, scheduling.parseOptions, Date.now(), peer => states.get(peer) ?? 'unknown', keeps)
  }

  app.get('/v1/deployments', async () => ({ deployments: statuses() }))

  app.get<{ Params: Static<typeof Id> }>('/v1/deployments/:id', { schema: { params: Id } }, async (request) => {
    const found = statuses().find(d => d.id === request.params.id)
    if (found == null) throw new NotFoundError(`no deployment ${request.params.id}`)
    return found
  })

  app.put<{ Params: Static<typeof Id>, Body: Static<typeof PutBody> }>('/v1/deployments/:id', { schema: { params: Id, body: PutBody } }, async (request) => {
    const { spec, auth } = request.body
    const parsed = parseDeploymentSpec(spec, scheduling.parseOptions)
    if (parsed.id !== request.params.id) throw new BadRequestError(`body.spec.id: "${parsed.id}" does not match the path`, 'body.spec.id')
    // the signature covers the spec exactly as sent, not with defaults filled in
    await agent.registry.set(deploymentKey(parsed.id), spec, { auth })
    return { id: parsed.id, written: true }
  })

  app.delete<{ Params: Static<typeof Id>, Body: Static<typeof DeleteBody> }>('/v1/deployments/:id', { schema: { params: Id, body: DeleteBody } }, async (request) => {
    await agent.registry.delete(deploymentKey(request.params.id), { auth: request.body.auth })
    return { id: request.params.id, deleted: true }
  })

  app.get('/v1/scheduler', async () => scheduling.election.status())

  const control = (state: NodeControlState) => ({ node: agent.peerId, ...state })
  app.get('/v1/control', async () => control(scheduling.control.state))
  app.post('/v1/drain', async () => control(await scheduling.control.setDrained(true)))
  app.post('/v1/undrain', async () => control(await scheduling.control.setDrained(false)))
  app.post<{ Params: Static<typeof Id> }>('/v1/deployments/:id/evict', { schema: { params: Id } }, async (request) =>
    control(await scheduling.control.setExcluded(request.params.id, true)))
  app.delete<{ Params: Static<typeof Id> }>('/v1/deployments/:id/evict', { schema: { params: Id } }, async (request) =>
    control(await scheduling.control.setExcluded(request.params.id, false)))
}
