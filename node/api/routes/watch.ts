import { Type, type Static } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

const WatchQuery = Type.Object({
  prefix: Type.String({ default: '', maxLength: 256 })
}, { additionalProperties: false })

/**
 * Registry changes as Server-Sent Events (`event: change`), for dashboards,
 * tools and benchmarks that would otherwise poll.
 */
export async function watchRoutes (app: FastifyInstance, { agent }: { agent: AgentView }): Promise<void> {
  app.get<{ Querystring: Static<typeof WatchQuery> }>('/v1/watch', { schema: { querystring: WatchQuery } }, async (request, reply) => {
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    res.write(': watching\n\n')
    const off = agent.registry.onChange(request.query.prefix, change => {
      const { key, entry, via } = change
      res.write(`event: change\ndata: ${JSON.stringify({ key, value: entry.value, deleted: entry.deleted, ts: entry.ts, writer: entry.writer, via })}\n\n`)
    })
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000)
    request.raw.on('close', () => {
      clearInterval(ping)
      off()
    })
  })
}
