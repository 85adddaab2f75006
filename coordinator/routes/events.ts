import { EventStreams } from '../../node/api/event-stream.ts'
import { principalOf } from '../auth/plugin.ts'
import { summaries } from './models.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { DeploymentView } from '../deployments/service.ts'
import type { NodesChange } from '../nodes/view.ts'
import type { FastifyInstance } from 'fastify'

export const DEFAULT_MAX_EVENT_STREAMS = 100

/**
 * Live fleet changes as Server-Sent Events. A stream opens with `snapshot`
 * (every node and the model status), then sends `node` for each node that
 * changed, `node-removed`, and `models` when the model status changed.
 * Callers with the `models` service also get `repository` (the model
 * repository, at once and on each upload); with `deployments`,
 * `deployments` (every deployment's status, at once and on each change). It
 * ends when the caller's access token expires (`expired`); the client
 * reconnects with a fresh one (browsers' EventSource cannot send headers,
 * so the dashboard reads the stream with fetch). At most `maxEventStreams`
 * at once (429 past it); a reader that lags gets only the latest state of
 * each node, and one that lags too far gets `close` (`slow-consumer`).
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
      summary: 'Server-Sent Events: snapshot, node, node-removed, models, repository, deployments; expired and close at the end',
      querystring: NoQuery,
      response: { 200: { description: 'text/event-stream', type: 'string' }, ...errorResponses(401, 403, 429) }
    }
  }, async (request, reply) => {
    const principal = principalOf(request)
    const stream = streams.open(reply)
    // coalescing keys: while the reader lags, only the latest state of each thing waits
    stream.send('snapshot', { nodes: nodes.list(), models: nodes.models() }, 'snapshot')
    const onChange = (evt: CustomEvent<NodesChange>): void => {
      for (const node of evt.detail.changed) stream.send('node', node, `node:${node.peerId}`)
      for (const peerId of evt.detail.removed) stream.send('node-removed', { peerId }, `node:${peerId}`)
      if (evt.detail.models) stream.send('models', { models: nodes.models() }, 'models')
    }
    nodes.addEventListener('change', onChange)
    stream.onClose(() => { nodes.removeEventListener('change', onChange) })
    // the repository and deployments go only to callers whose roles grant those services
    const { models: repository, deployments } = ctx
    if (repository != null && principal.services.includes('models')) {
      const sendRepository = (): void => { stream.send('repository', { models: summaries(repository.list()) }, 'repository') }
      sendRepository()
      repository.addEventListener('change', sendRepository)
      stream.onClose(() => { repository.removeEventListener('change', sendRepository) })
    }
    if (deployments != null && principal.services.includes('deployments')) {
      const sendDeployments = (evt?: CustomEvent<DeploymentView[]>): void => { stream.send('deployments', { deployments: evt?.detail ?? deployments.list() }, 'deployments') }
      sendDeployments()
      deployments.addEventListener('change', sendDeployments)
      stream.onClose(() => { deployments.removeEventListener('change', sendDeployments) })
    }
    // a stream must not outlive the credential that opened it
    const left = principal.expiresAt == null ? Infinity : Math.max(0, principal.expiresAt - Date.now())
    if (left < 2 ** 31 - 1) {
      const expiry = setTimeout(() => { stream.close('expired', 'expired') }, left)
      stream.onClose(() => { clearTimeout(expiry) })
    }
  })
}
