import { principalOf } from '../auth/plugin.ts'
import { UnavailableError } from '../errors.ts'
import { summaries } from './models.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { DeploymentView } from '../deployments/service.ts'
import type { NodesChange } from '../nodes/view.ts'
import type { FastifyInstance } from 'fastify'

export const DEFAULT_MAX_EVENT_STREAMS = 100
const PING_MS = 15_000

/**
 * Live fleet changes as Server-Sent Events. A stream opens with `snapshot`
 * (every node and the model status), then sends `node` for each node that
 * changed, `node-removed`, and `models` when the model status changed.
 * Callers with the `models` service also get `repository` (the model
 * repository, at once and on each upload); with `deployments`,
 * `deployments` (every deployment's status, at once and on each change). It
 * ends when the caller's access token expires; the client reconnects with
 * a fresh one (browsers' EventSource cannot send headers, so the dashboard
 * reads the stream with fetch).
 */
export async function eventRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const { nodes, metrics } = ctx
  const max = ctx.maxEventStreams
  let open = 0
  const streams = new Set<{ end(): void }>()
  // hijacked streams would keep the server from closing
  app.addHook('preClose', async () => { for (const res of streams) res.end() })

  app.get('/api/v1/events', {
    config: { service: 'nodes' },
    schema: {
      tags: ['nodes'],
      summary: 'Server-Sent Events: snapshot, node, node-removed, models, repository, deployments',
      querystring: NoQuery,
      response: { 200: { description: 'text/event-stream', type: 'string' }, ...errorResponses(401, 403, 503) }
    }
  }, async (request, reply) => {
    if (open >= max) throw new UnavailableError(`${open} event streams are open; the limit is ${max}`)
    const principal = principalOf(request)
    open++
    metrics.eventStreams.set(open)
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    const send = (event: string, data: unknown): void => { res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`) }
    send('snapshot', { nodes: nodes.list(), models: nodes.models() })
    const onChange = (evt: CustomEvent<NodesChange>): void => {
      for (const node of evt.detail.changed) send('node', node)
      for (const peerId of evt.detail.removed) send('node-removed', { peerId })
      if (evt.detail.models) send('models', { models: nodes.models() })
    }
    nodes.addEventListener('change', onChange)
    // the repository and deployments go only to callers whose roles grant those services
    const { models: repository, deployments } = ctx
    const sendRepository = (): void => { send('repository', { models: summaries(repository!.list()) }) }
    const sendDeployments = (evt?: CustomEvent<DeploymentView[]>): void => { send('deployments', { deployments: evt?.detail ?? deployments!.list() }) }
    const repositoryOn = repository != null && principal.services.includes('models')
    const deploymentsOn = deployments != null && principal.services.includes('deployments')
    if (repositoryOn) {
      sendRepository()
      repository.addEventListener('change', sendRepository)
    }
    if (deploymentsOn) {
      sendDeployments()
      deployments.addEventListener('change', sendDeployments)
    }
    const ping = setInterval(() => res.write(': ping\n\n'), PING_MS)
    // a stream must not outlive the credential that opened it
    const left = principal.expiresAt == null ? Infinity : Math.max(0, principal.expiresAt - Date.now())
    const expiry = left < 2 ** 31 - 1 ? setTimeout(() => { send('expired', {}); res.end() }, left) : undefined
    streams.add(res)
    let closed = false
    const close = (): void => {
      if (closed) return
      closed = true
      streams.delete(res)
      open--
      metrics.eventStreams.set(open)
      clearInterval(ping)
      clearTimeout(expiry)
      nodes.removeEventListener('change', onChange)
      if (repositoryOn) repository.removeEventListener('change', sendRepository)
      if (deploymentsOn) deployments.removeEventListener('change', sendDeployments)
    }
    res.on('close', close)
    request.raw.on('close', close)
  })
}
