import semver from 'semver'
import { RolloutConflictError, RolloutSpecError } from './errors.ts'
import type { RolloutSpec } from './rollout.ts'
import type { FleetNode } from './waves.ts'

/** Fields of a rollout that its signed rewrites (pause, resume, abort) may change. */
const MUTABLE = new Set(['state', 'maxFailures'])

/** What admitting a rollout looks at: who holds which release bundle, and what the fleet runs. */
export interface AdmitContext {
  /** whether some node of the mesh advertises this release bundle complete */
  held: (digest: string) => boolean
  fleet: () => FleetNode[]
}

/**
 * Whether a rollout record may be written, checked where it enters the
 * mesh (any agent's API, the coordinator's): a rewrite may pause, resume,
 * abort or raise the failure budget and nothing else; a new one must name
 * releases some node holds (else no node can ever pull them) and must not
 * move nodes back unless it says so. Errors name the field.
 */
export function admitRollout (next: RolloutSpec, existing: RolloutSpec | undefined, ctx: AdmitContext, root = 'rollout'): void {
  if (existing != null) {
    for (const key of new Set([...Object.keys(existing), ...Object.keys(next)])) {
      if (MUTABLE.has(key)) continue
      if (JSON.stringify((existing as Record<string, unknown>)[key]) !== JSON.stringify((next as Record<string, unknown>)[key])) {
        throw new RolloutSpecError(`${root}.${key}: a rollout's ${key} cannot change once written (only state and maxFailures can); create another rollout`, `${root}.${key}`)
      }
    }
    if (existing.state === 'aborted' && next.state !== 'aborted') throw new RolloutConflictError(`${root}.state: rollout ${existing.id} was aborted and stays so; create another rollout`)
    return
  }
  if (next.state === 'aborted') throw new RolloutSpecError(`${root}.state: a new rollout cannot start aborted`, `${root}.state`)
  next.releases.forEach((r, i) => {
    if (!ctx.held(r.digest)) throw new RolloutSpecError(`${root}.releases[${i}].digest: no node of the mesh holds release bundle ${r.digest}; publish it first (gatemesh release publish)`, `${root}.releases[${i}].digest`)
  })
  if (next.allowDowngrade) return
  const version = next.releases[0]!.version
  const newer = ctx.fleet().filter(n => n.record?.managed === true && semver.valid(n.record.version) != null && semver.gt(n.record.version, version) && next.releases.some(r => r.arch === n.record!.arch))
  if (newer.length > 0) {
    throw new RolloutSpecError(`${root}.allowDowngrade: ${newer.length} node(s) run a newer release than ${version} (e.g. ${newer[0]!.peer} runs ${newer[0]!.record!.version}); allow the downgrade (--allow-downgrade) to move them back`, `${root}.allowDowngrade`)
  }
}
