import { Type, type Static } from '@sinclair/typebox'
import { readReleaseManifest } from '../../../packaging/release/verify.ts'
import { admitRollout } from '../../release/admit.ts'
import { parseRolloutSpec, rolloutKey } from '../../release/rollout.ts'
import { BadRequestError, NotFoundError } from '../errors.ts'
import type { BundleApi } from './bundles.ts'
import type { ReleaseService } from '../../release/service.ts'
import type { FastifyInstance } from 'fastify'
import type { AgentView } from '../server.ts'

/** What the rollout routes need from the agent's release service. */
export type ReleaseApi = Pick<ReleaseService, 'statuses' | 'rollouts' | 'view' | 'fleet'>

const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9][a-z0-9._-]*$' }) }, { additionalProperties: false })
const Auth = Type.String({ minLength: 10, maxLength: 16 * 1024 })
const PutBody = Type.Object({ rollout: Type.Unknown(), auth: Auth }, { additionalProperties: false })

/**
 * Rollouts peer to peer, like deployments: any agent accepts a
 * fleet-signed rollout record and writes it to the registry, from where
 * every node works out its own wave. Plus this node's own release state
 * and the releases it holds.
 */
export async function rolloutRoutes (app: FastifyInstance, { agent, releases, bundles }: { agent: AgentView, releases: ReleaseApi, bundles?: Pick<BundleApi, 'list' | 'store'> }): Promise<void> {
  app.get('/v1/rollouts', async () => {
    const list = releases.statuses()
    return { rollouts: list, count: list.length }
  })

  app.get<{ Params: Static<typeof Id> }>('/v1/rollouts/:id', { schema: { params: Id } }, async request => {
    const found = releases.statuses().find(r => r.id === request.params.id)
    if (found == null) throw new NotFoundError(`no rollout ${request.params.id}`)
    return found
  })

  app.put<{ Params: Static<typeof Id>, Body: Static<typeof PutBody> }>('/v1/rollouts/:id', { schema: { params: Id, body: PutBody } }, async request => {
    const { rollout, auth } = request.body
    const parsed = parseRolloutSpec(rollout, 'body.rollout')
    if (parsed.id !== request.params.id) throw new BadRequestError(`body.rollout.id: "${parsed.id}" does not match the path`, 'body.rollout.id')
    const existing = releases.rollouts().find(r => r.id === parsed.id)
    admitRollout(parsed, existing, { held: digest => heldInMesh(agent, digest), fleet: () => releases.fleet() }, 'body.rollout')
    // the signature covers the record exactly as sent
    await agent.registry.set(rolloutKey(parsed.id), rollout, { auth })
    return { id: parsed.id, written: true, created: existing == null }
  })

  app.get('/v1/release', async () => await releases.view())

  // the release bundles this agent holds, for `gatemesh rollout create DIGEST|VERSION`
  if (bundles != null) {
    app.get('/v1/releases', async () => {
      const out = []
      for (const b of bundles.list()) {
        if (b.kind !== 'release' || b.state !== 'complete') continue
        try {
          const m = await readReleaseManifest(bundles.store.pathOf(b))
          out.push({ digest: b.digest, size: b.size, version: m.version, arch: m.arch, node: m.node, createdAt: m.createdAt, publisher: b.publisher ?? m.publisher })
        } catch {}
      }
      return { releases: out, count: out.length }
    })
  }
}

/** Whether some node advertises the release bundle complete. */
export function heldInMesh (agent: Pick<AgentView, 'registry'>, digest: string): boolean {
  return agent.registry.list<{ complete?: boolean, kind?: string }>(`bundle/${digest}/`).some(e => e.value?.complete === true && e.value.kind === 'release')
}
