import { Type, type Static } from '@sinclair/typebox'
import { EventStreams } from '../event-stream.ts'
import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

/** Each stream may hold DEFAULT_MAX_PENDING_BYTES for a slow reader: 64 MiB at most on a gateway. */
export const DEFAULT_MAX_WATCH_STREAMS = 32

const WatchQuery = Type.Object({
  prefix: Type.String({ default: '', maxLength: 256 })
}, { additionalProperties: false })

/**
 * Registry changes as Server-Sent Events (`event: change`), for dashboards,
 * tools and benchmarks that would otherwise poll. At most `maxStreams` at
 * once (429 past it); a reader that lags gets the latest change per key,
 * and one that lags too far gets `event: close` (`slow-consumer`) and
 * reconnects; heartbeats every 15 s.
 */
export async function watchRoutes (app: FastifyInstance, { agent, maxStreams }: { agent: AgentView, maxStreams?: number }): Promise<void> {
  const streams = new EventStreams({
    max: maxStreams ?? DEFAULT_MAX_WATCH_STREAMS,
    onCount: open => { agent.metrics.watchStreams.set(open) },
    logger: app.log
  })
  app.addHook('preClose', async () => { streams.closeAll() })

  app.get<{ Querystring: Static<typeof WatchQuery> }>('/v1/watch', { schema: { querystring: WatchQuery } }, async (request, reply) => {
    const stream = streams.open(reply)
    stream.comment('watching')
    const off = agent.registry.onChange(request.query.prefix, change => {
      const { key, entry, via } = change
      stream.send('change', { key, value: entry.value, deleted: entry.deleted, ts: entry.ts, writer: entry.writer, via }, key)
    })
    stream.onClose(off)
  })
}
