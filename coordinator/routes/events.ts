import { EventStreams } from '../../node/api/event-stream.ts'
import { principalOf } from '../auth/plugin.ts'
import { DeltaStream } from './delta-stream.ts'
import { summaries } from './models.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { NodesChange } from '../nodes/view.ts'
import type { FastifyInstance } from 'fastify'

export const DEFAULT_MAX_EVENT_STREAMS = 100

/**
 * Live fleet changes as Server-Sent Events. A stream opens with `snapshot`
 * (every node and the model status; with the `models` service also
 * `repository`, the model repository; with `deployments` also
 * `deployments`, every deployment's status; `rollouts`, every agent
 * rollout's status, when the coordinator runs rollouts), then sends at most one
 * `delta` a second: the latest state of each node that changed since the
 * last one (`nodes`), the nodes gone (`removed`), and whichever of
 * `models`, `repository`, `deployments` and `rollouts` changed, whole (see
 * DeltaStream). It ends when the caller's access token expires
 * (`expired`); the client reconnects with a fresh one (browsers'
 * EventSource cannot send headers, so the dashboard reads the stream with
 * fetch). At most `maxEventStreams` at once (429 past it); a reader that
 * lags too far gets `close` (`slow-consumer`).
 */
export async function eventRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { nodes, metrics } = ctx
  const streams = new EventStreams({
    max: ctx.maxEventStreams,
    onCount: open => { metrics.eventStreams.set(open) },
    logger: ctx.logger
  })
  // hijacked streams would keep the server from closing
  app.addHook('preClose', async () => { streams.closeAll() })

  app.get('/api/v1/events', {
    config: { service: 'nodes' },
    schema: {
      tags: ['nodes'],
      summary: 'Server-Sent Events: snapshot, then at most one delta a second (changed and removed nodes, and models, repository, deployments, rollouts when they changed); expired and close at the end',
      querystring: NoQuery,
      response: { 200: { description: 'text/event-stream', type: 'string' }, ...errorResponses(401, 403, 429) }
    }
  }, async (request, reply) => {
    const principal = principalOf(request)
    const stream = streams.open(reply)
    const deltas = new DeltaStream(stream)
    // the repository and deployments go only to callers whose roles grant those services
    const repository = principal.services.includes('models') ? ctx.models : undefined
    const deployments = principal.services.includes('deployments') ? ctx.deployments : undefined
    const snapshot: Record<string, unknown> = { nodes: nodes.list(), models: nodes.models() }
    if (repository != null) snapshot.repository = summaries(repository.list())
    if (deployments != null) snapshot.deployments = deployments.list()
    // rollouts are read with the nodes service, which this stream needs anyway
    const rollouts = ctx.rollouts
    if (rollouts != null) snapshot.rollouts = rollouts.list()
    deltas.send('snapshot', snapshot)
    const onChange = (evt: CustomEvent<NodesChange>): void => {
      for (const node of evt.detail.changed) deltas.node(node)
      for (const peerId of evt.detail.removed) deltas.removed(peerId)
      if (evt.detail.models) deltas.field('models', () => nodes.models())
    }
    nodes.addEventListener('change', onChange)
    stream.onClose(() => { nodes.removeEventListener('change', onChange) })
    if (repository != null) {
      const onRepository = (): void => { deltas.field('repository', () => summaries(repository.list())) }
      repository.addEventListener('change', onRepository)
      stream.onClose(() => { repository.removeEventListener('change', onRepository) })
    }
    if (deployments != null) {
      const onDeployments = (): void => { deltas.field('deployments', () => deployments.list()) }
      deployments.addEventListener('change', onDeployments)
      stream.onClose(() => { deployments.removeEventListener('change', onDeployments) })
    }
    if (rollouts != null) {
      const onRollouts = (): void => { deltas.field('rollouts', () => rollouts.list()) }
      rollouts.addEventListener('change', onRollouts)
      stream.onClose(() => { rollouts.removeEventListener('change', onRollouts) })
    }
    // a stream must not outlive the credential that opened it
    const left = principal.expiresAt == null ? Infinity : Math.max(0, principal.expiresAt - Date.now())
    if (left < 2 ** 31 - 1) {
      const expiry = setTimeout(() => { stream.close('expired', 'expired') }, left)
      stream.onClose(() => { clearTimeout(expiry) })
    }
  })
}
