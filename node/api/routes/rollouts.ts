import { Type, type Static } from '@sinclair/typebox'
import semver from 'semver'
import { readReleaseManifest } from '../../../packaging/release/verify.ts'
import { parseRolloutSpec, rolloutKey, type RolloutSpec } from '../../release/rollout.ts'
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

/** Fields of a rollout that its signed rewrites (pause, resume, abort) may change. */
const MUTABLE = new Set(['state', 'maxFailures'])

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
    const parsed = parseRolloutSpec(rollout)
    if (parsed.id !== request.params.id) throw new BadRequestError(`body.rollout.id: "${parsed.id}" does not match the path`, 'body.rollout.id')
    const existing = releases.rollouts().find(r => r.id === parsed.id)
    if (existing != null) checkRewrite(existing, parsed)
    else checkNew(parsed, agent, releases)
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

/** A rewrite of a rollout may pause, resume, abort it or raise its failure budget; nothing else. */
function checkRewrite (existing: RolloutSpec, next: RolloutSpec): void {
  for (const key of new Set([...Object.keys(existing), ...Object.keys(next)])) {
    if (MUTABLE.has(key)) continue
    if (JSON.stringify((existing as Record<string, unknown>)[key]) !== JSON.stringify((next as Record<string, unknown>)[key])) {
      throw new BadRequestError(`body.rollout.${key}: a rollout's ${key} cannot change once written (only state and maxFailures can); create another rollout`, `body.rollout.${key}`)
    }
  }
  if (existing.state === 'aborted' && next.state !== 'aborted') throw new BadRequestError('body.rollout.state: an aborted rollout stays aborted; create another rollout', 'body.rollout.state')
}

/**
 * A new rollout must name releases some node holds (else no node can ever
 * pull them), and must not move nodes back unless it says so.
 */
function checkNew (spec: RolloutSpec, agent: AgentView, releases: ReleaseApi): void {
  spec.releases.forEach((r, i) => {
    const held = agent.registry.list<{ complete?: boolean, kind?: string }>(`bundle/${r.digest}/`).some(e => e.value?.complete === true && e.value.kind === 'release')
    if (!held) throw new BadRequestError(`body.rollout.releases[${i}].digest: no node of the mesh holds release bundle ${r.digest}; publish it first (gatemesh release publish)`, `body.rollout.releases[${i}].digest`)
  })
  if (spec.allowDowngrade) return
  const version = spec.releases[0]!.version
  const newer = releases.fleet().filter(n => n.record?.managed === true && semver.valid(n.record.version) != null && semver.gt(n.record.version, version) && spec.releases.some(r => r.arch === n.record!.arch))
  if (newer.length > 0) {
    throw new BadRequestError(`body.rollout.allowDowngrade: ${newer.length} node(s) run a newer release than ${version} (e.g. ${newer[0]!.peer} runs ${newer[0]!.record!.version}); set allowDowngrade to move them back`, 'body.rollout.allowDowngrade')
  }
}
