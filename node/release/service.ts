import { join } from 'node:path'
import semver from 'semver'
import { isArch, type Arch } from '../../packaging/image/arch.ts'
import { PREVIOUS, RESTART_EXIT_CODE } from '../../packaging/image/layout.ts'
import { installRelease, linkedRelease, pruneReleases, readReleaseInfo } from '../../packaging/release/install.ts'
import { VERSION } from '../version.ts'
import { checkHealth, type HealthCheck } from './health.ts'
import { asReleaseRecord, type ReleaseRecord } from './record.ts'
import { releaseKey, type RolloutSpec } from './rollout.ts'
import { ReleaseStateDir, type Handover, type HistoryEntry } from './state.ts'
import { releaseFor, rolloutFor, rolloutStatus, type FleetNode, type RolloutStatus } from './waves.ts'
import { installedReleases, readFleet, readRollouts } from './fleet.ts'
import { loaderFromEnv, type LoaderInfo } from './loader-env.ts'
import type { BundleLimits } from '../../packaging/bundle/index.ts'
import type { Member } from '../membership/membership.ts'
import type { Registry } from '../registry/registry.ts'
import type { ReleaseInfo } from '../../packaging/image/manifest.ts'
import type { Startable } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'

export interface ReleaseServiceComponents {
  peerId: string
  dataDir: string
  labels: Record<string, string>
  registry: Pick<Registry, 'set' | 'list' | 'value' | 'onChange' | 'addEventListener' | 'removeEventListener'>
  members(): readonly Member[]
  /** a peer's certificate claims, the only source of its role and labels */
  claimsOf(peer: string): { role: string, labels: Record<string, string> } | undefined
  verifiedPeers(): number
  bundles: {
    pull(digest: string): unknown
    waitFor(digest: string): Promise<unknown>
    pathOf(digest: string): string
    get(digest: string): { transfer?: { error?: { code: string, message: string } } }
  }
  /** this node's model instances and their state */
  instances(): Array<{ name: string, state: string }>
  /** whether the winning placement of a deployment names this node */
  placedHere(deployment: string): boolean
  fleetPublicKey: KeyObject
  logger: Logger
  /** stop the agent and exit with `code` (the unit restarts it) */
  exit?: (code: number, reason: string) => void
}

export interface ReleaseServiceInit {
  /** @default loaderFromEnv() */
  loader?: LoaderInfo | null
  /** Evaluate rollouts at least this often (waves open with time and liveness). @default 5000 */
  evaluateIntervalMs?: number
  /** How often a release on probation checks its health. @default 2000 */
  healthIntervalMs?: number
  /** After a failed download, wait this long before trying again. @default 30000 */
  retryMs?: number
  limits?: Partial<BundleLimits>
  /** @default Date.now */
  now?: () => number
}

/** What `GET /v1/release` shows: this node's side of releases and rollouts. */
export interface NodeReleaseView {
  record: ReleaseRecord
  loader: LoaderInfo | null
  installed: Array<{ version: string, digest: string | null, node: string, origin: string }>
  health?: HealthCheck
  history: HistoryEntry[]
}

/** Bundle errors that no retry fixes: the bundle the rollout names can never verify. */
const PERMANENT = new Set(['ERR_BUNDLE_SIGNATURE', 'ERR_HASH_MISMATCH', 'ERR_CORRUPT_ARCHIVE', 'ERR_INVALID_MANIFEST', 'ERR_RELEASE_MANIFEST', 'ERR_ARCHIVE_LIMIT', 'ERR_INVALID_ENTRY_NAME', 'ERR_PATH_TRAVERSAL', 'ERR_LINK_ENTRY', 'ERR_UNLISTED_ENTRY', 'ERR_MISSING_ENTRY', 'ERR_SIZE_MISMATCH', 'ERR_DUPLICATE_ENTRY', 'ERR_UNSUPPORTED_ENTRY'])

function arch (): string {
  return process.arch
}

/**
 * This node's part in agent releases and rollouts, with no controller:
 *
 *  - reports under `release/<self>` what it runs, whether its image's
 *    loader can switch it to another release (`managed`), and how far it
 *    got in the rollout it follows;
 *  - works out, from the signed `rollout/<id>` records and every node's
 *    `release/<peer>`, whether its wave has come (waves.ts); if so pulls
 *    the release through the bundle store, installs it beside the running
 *    one, stages it for the loader and exits to be restarted into it;
 *  - after such a restart, on probation, checks its health (health.ts)
 *    and confirms itself to the loader, which otherwise goes back;
 *  - after the loader went back, reports the failure and why.
 */
export class ReleaseService implements Startable {
  readonly #c: ReleaseServiceComponents
  readonly #loader: LoaderInfo | undefined
  readonly #state: ReleaseStateDir
  readonly #evaluateMs: number
  readonly #healthMs: number
  readonly #retryMs: number
  readonly #limits: Partial<BundleLimits> | undefined
  readonly #now: () => number
  readonly #log: Logger
  #info?: ReleaseInfo
  #record!: ReleaseRecord
  #probation?: { handover?: Handover, deadline: number }
  #health?: HealthCheck
  #synced = false
  #busy = false
  /** set once the agent was told to restart into a release: nothing more is started in this process */
  #leaving = false
  #retryAt = 0
  #timer?: NodeJS.Timeout
  #healthTimer?: NodeJS.Timeout
  #soon?: NodeJS.Timeout
  #off: Array<() => void> = []
  #started = false
  #evaluating: Promise<void> = Promise.resolve()

  constructor (components: ReleaseServiceComponents, init: ReleaseServiceInit = {}) {
    this.#c = components
    this.#loader = init.loader === null ? undefined : (init.loader ?? loaderFromEnv())
    this.#state = new ReleaseStateDir(components.dataDir)
    this.#evaluateMs = init.evaluateIntervalMs ?? 5000
    this.#healthMs = init.healthIntervalMs ?? 2000
    this.#retryMs = init.retryMs ?? 30_000
    this.#limits = init.limits
    this.#now = init.now ?? Date.now
    this.#log = components.logger
  }

  get releasesDir (): string | undefined {
    return this.#loader == null ? undefined : join(this.#loader.installDir, 'releases')
  }

  get record (): ReleaseRecord {
    return this.#record
  }

  async start (): Promise<void> {
    this.#started = true
    const startedAt = this.#now()
    if (this.#loader != null) this.#info = await readReleaseInfo(join(this.releasesDir!, this.#loader.release))
    const managed = this.#info != null && isArch(arch())
    const previous = this.#loader == null ? undefined : await linkedRelease(this.releasesDir!, PREVIOUS)
    const last = asReleaseRecord(this.#c.registry.value(releaseKey(this.#c.peerId)))
    this.#record = {
      version: this.#info?.version ?? VERSION,
      digest: this.#info?.digest ?? null,
      arch: arch(),
      node: process.versions.node,
      managed,
      ...(managed ? {} : { reason: this.#loader == null ? 'not started by an image\'s loader (run from sources, a package, or an image from before releases)' : `the loader started release ${this.#loader.release}, which has no readable release.json` }),
      ...(previous == null || previous === this.#info?.version ? {} : { previous }),
      state: 'idle',
      at: startedAt,
      startedAt
    }
    // what this node last said about a rollout still holds, unless it was cut short
    if (last != null && last.rollout != null && ['healthy', 'rolled-back', 'failed', 'skipped'].includes(last.state)) {
      this.#record = { ...this.#record, state: last.state, rollout: last.rollout, ...(last.target == null ? {} : { target: last.target }), ...(last.detail == null ? {} : { detail: last.detail }), ...(last.healthyAt == null ? {} : { healthyAt: last.healthyAt }), at: last.at }
    }
    if (managed) await this.#afterRestart(last)
    await this.#write()
    const soon = (): void => { this.#schedule() }
    for (const prefix of ['rollout/', 'release/', 'node/']) this.#off.push(this.#c.registry.onChange(prefix, soon))
    const onSynced = (): void => { this.#synced = true }
    this.#c.registry.addEventListener('synced', onSynced)
    this.#off.push(() => { this.#c.registry.removeEventListener('synced', onSynced) })
    this.#timer = setInterval(soon, this.#evaluateMs)
    this.#timer.unref()
    if (this.#probation != null) this.#startHealthChecks()
    this.#schedule()
  }

  async stop (): Promise<void> {
    this.#started = false
    clearInterval(this.#timer)
    clearInterval(this.#healthTimer)
    clearTimeout(this.#soon)
    for (const off of this.#off) off()
    this.#off = []
    await this.#evaluating
  }

  /** What the loader left: a release on probation (us), or one it gave up. */
  async #afterRestart (last: ReleaseRecord | undefined): Promise<void> {
    const rollback = await this.#state.read('rollback')
    if (rollback != null) {
      const detail = `rolled back from ${rollback.version ?? '?'} to ${rollback.previous ?? '?'}: ${rollback.reason ?? 'no reason given'}`
      const rollout = /^[a-z0-9][a-z0-9._-]{0,63}$/.test(rollback.rollout ?? '') ? rollback.rollout! : last?.rollout
      this.#record = { ...this.#record, state: 'rolled-back', ...(rollout == null ? {} : { rollout }), ...(rollback.version == null ? {} : { target: rollback.version.slice(0, 64) }), detail: detail.slice(0, 600), at: this.#now() }
      delete this.#record.healthyAt
      this.#log.warn({ version: rollback.version, previous: rollback.previous, rollout, reason: rollback.reason }, 'the loader rolled back a release')
      await this.#state.addHistory({ rollout: rollout ?? '', from: rollback.previous ?? '', to: rollback.version ?? '', result: 'rolled-back', detail, at: this.#now() })
      await this.#state.remove('rollback')
      await this.#state.remove('handover.json')
      return
    }
    const pending = await this.#state.read('pending')
    if (pending != null && pending.version === this.#loader!.release) {
      const handover = await this.#state.readHandover()
      const since = Number(pending.since) * 1000
      const deadline = since + Number(pending.deadline) * 1000
      this.#probation = { ...(handover == null ? {} : { handover }), deadline }
      const rollout = handover?.rollout ?? pending.rollout
      this.#record = { ...this.#record, state: 'verifying', ...(rollout == null || rollout === '' ? {} : { rollout }), target: this.#record.version, detail: `on probation until ${new Date(deadline).toISOString()}`, at: this.#now() }
      delete this.#record.healthyAt
      this.#log.info({ version: this.#record.version, from: pending.previous, deadline: new Date(deadline).toISOString() }, 'started a new release on probation: checking its health')
      return
    }
    if (last?.state === 'restarting' && last.target != null && last.target !== this.#record.version && last.rollout != null) {
      // staged, restarted, and still here: the loader did not take the release (its log says why)
      const detail = `restarted, but the loader did not switch to ${last.target}; it still runs ${this.#record.version}`
      this.#record = { ...this.#record, state: 'failed', rollout: last.rollout, target: last.target, detail, at: this.#now() }
      await this.#state.addHistory({ rollout: last.rollout, from: this.#record.version, to: last.target, result: 'failed', detail, at: this.#now() })
      return
    }
    // cut short before the restart (a crash, a power cut): the rollout is evaluated again, and the pull resumes
    if (last != null && ['downloading', 'installing'].includes(last.state)) {
      this.#log.info({ state: last.state, target: last.target }, 'an update was interrupted; it starts over')
    }
  }

  #startHealthChecks (): void {
    const run = (): void => {
      this.#checkHealth().catch(err => { this.#log.warn({ err: err.message }, 'health check failed to run') })
    }
    this.#healthTimer = setInterval(run, this.#healthMs)
    this.#healthTimer.unref()
    run()
  }

  async #checkHealth (): Promise<void> {
    if (this.#probation == null || !this.#started) return
    const self = this.#c.peerId
    const alive = this.#c.members().filter(m => !m.self && m.peerId !== self && m.state === 'alive').length
    const health = checkHealth({
      ...(this.#probation.handover == null ? {} : { handover: this.#probation.handover }),
      verifiedPeers: this.#c.verifiedPeers(),
      alivePeers: alive,
      synced: this.#synced,
      instances: new Map(this.#c.instances().map(i => [i.name, i.state])),
      placedHere: d => this.#c.placedHere(d)
    })
    this.#health = health
    await this.#state.write('health', { note: health.note.slice(0, 300) })
    if (!health.healthy) return
    // confirmed: the loader stops watching, and the release stays
    const probation = this.#probation
    this.#probation = undefined
    clearInterval(this.#healthTimer)
    await this.#state.remove('pending')
    await this.#state.remove('handover.json')
    // a note of this release's must not be quoted as the reason a later one rolled back
    await this.#state.remove('health')
    const now = this.#now()
    this.#record = { ...this.#record, state: 'healthy', detail: health.note.slice(0, 600), at: now, healthyAt: now }
    this.#log.info({ version: this.#record.version, rollout: this.#record.rollout, checks: health.checks }, 'the new release passed its health check')
    await this.#state.addHistory({ rollout: this.#record.rollout ?? '', from: probation.handover?.from ?? '', to: this.#record.version, result: 'healthy', detail: health.note, at: now })
    await this.#write()
    // the release before the previous one is no longer needed
    await this.#prune([this.#record.version, ...(this.#record.previous == null ? [] : [this.#record.previous])])
    this.#schedule()
  }

  /** Every node's view of the fleet, for waves.ts. */
  fleet (): FleetNode[] {
    return readFleet(this.#c, this.#record, this.#now())
  }

  /** Every valid rollout record, newest first. */
  rollouts (): RolloutSpec[] {
    return readRollouts(this.#c.registry, this.#log)
  }

  /** Status of every rollout as this node sees the fleet, newest first. */
  statuses (): RolloutStatus[] {
    const fleet = this.fleet()
    const all = this.rollouts()
    return all.map((r, i) => rolloutStatus(r, fleet, this.#now(), all.slice(0, i)))
  }

  async view (): Promise<NodeReleaseView> {
    const installed = this.releasesDir == null ? [] : await installedReleases(this.releasesDir)
    return { record: this.#record, loader: this.#loader ?? null, installed, ...(this.#health == null ? {} : { health: this.#health }), history: await this.#state.history() }
  }

  #schedule (): void {
    if (this.#soon != null || !this.#started) return
    this.#soon = setTimeout(() => {
      this.#soon = undefined
      this.#evaluating = this.#evaluating.then(async () => { await this.#evaluate() }).catch(err => {
        this.#log.warn({ err: err.message }, 'evaluating rollouts failed')
      })
    }, 200)
    this.#soon.unref()
  }

  async #evaluate (): Promise<void> {
    if (!this.#started || this.#leaving || !this.#record.managed || this.#busy || this.#probation != null || this.#now() < this.#retryAt) return
    const arch = this.#record.arch
    const all = this.rollouts()
    const rollout = rolloutFor(all, { labels: this.#c.labels, arch })
    if (rollout == null || rollout.state !== 'active') return
    const r = this.#record
    if (r.rollout === rollout.id && ['rolled-back', 'failed', 'skipped'].includes(r.state)) return
    const release = releaseFor(rollout, arch)!
    if (release.version === r.version) return
    const older = semver.valid(r.version) != null && semver.lt(release.version, r.version)
    if (older && !rollout.allowDowngrade) {
      await this.#set({ state: 'skipped', rollout: rollout.id, target: release.version, detail: `runs ${r.version}; going back to ${release.version} is a downgrade, which the rollout does not allow (--allow-downgrade)` })
      return
    }
    const status = rolloutStatus(rollout, this.fleet(), this.#now(), all.slice(0, all.indexOf(rollout)))
    if (status.phase !== 'active') return
    const me = status.targets.find(t => t.peer === this.#c.peerId)
    if (me == null || me.wave > status.currentWave) return
    this.#busy = true
    try {
      await this.#update(rollout, release, me.wave, status)
    } finally {
      this.#busy = false
    }
  }

  async #update (rollout: RolloutSpec, release: RolloutSpec['releases'][number], wave: number, status: RolloutStatus): Promise<void> {
    const log = this.#log.child({ rollout: rollout.id, version: release.version, wave })
    // what opened the wave here: the earlier waves' targets as this node saw them (those not done by name, a few)
    const earlier = status.targets.filter(t => t.wave < wave)
    const earlierOutcomes: Record<string, number> = {}
    for (const t of earlier) earlierOutcomes[t.outcome] = (earlierOutcomes[t.outcome] ?? 0) + 1
    const notDone = earlier.filter(t => t.outcome !== 'done').slice(0, 10).map(t => ({ peer: t.peer, outcome: t.outcome, version: t.version, ...(t.state == null ? {} : { state: t.state }) }))
    log.info({ digest: release.digest, size: release.size, targets: status.targets.length, earlier: earlierOutcomes, notDone }, 'this node\'s wave has come: pulling the release')
    await this.#set({ state: 'downloading', rollout: rollout.id, target: release.version, detail: `wave ${wave + 1}: pulling ${release.size} bytes` })
    try {
      this.#c.bundles.pull(release.digest)
      await this.#c.bundles.waitFor(release.digest)
    } catch (err: any) {
      const cause = (() => { try { return this.#c.bundles.get(release.digest).transfer?.error } catch { return undefined } })()
      if (cause != null && PERMANENT.has(cause.code)) {
        log.warn({ err: cause.message, code: cause.code }, 'the release bundle does not verify: never installed')
        await this.#fail(rollout, release, `the release bundle was refused before it was unpacked: ${cause.message}`)
        return
      }
      log.warn({ err: err.message }, 'pulling the release failed; trying again later')
      this.#retryAt = this.#now() + this.#retryMs
      await this.#set({ state: 'idle', rollout: rollout.id, target: release.version, detail: `download failed, retrying: ${String(err.message).slice(0, 300)}` })
      return
    }
    await this.#set({ state: 'installing', detail: `unpacking beside ${this.#record.version}` })
    let installed
    try {
      installed = await installRelease({ file: this.#c.bundles.pathOf(release.digest), releasesDir: this.releasesDir!, fleetPublicKey: this.#c.fleetPublicKey, arch: this.#record.arch as Arch, digest: release.digest, ...(this.#limits == null ? {} : { limits: this.#limits }) })
    } catch (err: any) {
      log.warn({ err: err.message, code: err.code }, 'installing the release failed')
      await this.#fail(rollout, release, `install failed: ${err.message}`)
      return
    }
    log.info({ dir: installed.dir, reused: installed.reused, runtime: installed.runtimeInstalled }, 'release installed')
    // paused or aborted meanwhile: the release waits on disk for the rollout to go on
    const now = this.rollouts().find(r => r.id === rollout.id)
    if (now?.state !== 'active') {
      await this.#set({ state: 'idle', detail: `installed; the rollout is ${now?.state ?? 'gone'}, so it waits` })
      return
    }
    await this.#prune([this.#record.version, release.version, ...(this.#record.previous == null ? [] : [this.#record.previous])])
    const instances = this.#c.instances().filter(i => i.state === 'running').map(i => {
      const deployment = (this.#c.registry.value<{ deployment?: unknown }>(`instance/${this.#c.peerId}/${i.name}`))?.deployment
      return { name: i.name, ...(typeof deployment === 'string' ? { deployment } : {}) }
    })
    await this.#state.writeHandover({ rollout: rollout.id, version: release.version, from: this.#record.version, instances, peers: this.#c.verifiedPeers(), at: this.#now() })
    await this.#state.remove('health')
    await this.#state.write('next', { version: release.version, deadline: String(rollout.healthDeadlineSec), rollout: rollout.id })
    await this.#set({ state: 'restarting', detail: `restarting into ${release.version}` })
    // let the registry write reach the peers before the process goes
    await new Promise(resolve => setTimeout(resolve, 1000))
    if (this.#c.exit == null) {
      log.warn('release staged, but nothing here can restart the agent')
      return
    }
    log.info('restarting into the new release')
    this.#leaving = true
    this.#c.exit(RESTART_EXIT_CODE, `restart into release ${release.version}`)
  }

  async #fail (rollout: RolloutSpec, release: RolloutSpec['releases'][number], detail: string): Promise<void> {
    await this.#set({ state: 'failed', rollout: rollout.id, target: release.version, detail })
    await this.#state.addHistory({ rollout: rollout.id, from: this.#record.version, to: release.version, result: 'failed', detail, at: this.#now() })
  }

  async #prune (keep: string[]): Promise<void> {
    if (this.releasesDir == null) return
    try {
      const removed = await pruneReleases(this.releasesDir, keep)
      if (removed.length > 0) this.#log.info({ removed }, 'removed releases nothing needs')
    } catch (err: any) {
      this.#log.debug({ err: err.message }, 'pruning releases failed')
    }
  }

  async #set (fields: Partial<ReleaseRecord>): Promise<void> {
    const next: ReleaseRecord = { ...this.#record, ...fields, at: this.#now() }
    if (fields.detail == null) delete next.detail
    if (fields.detail != null) next.detail = fields.detail.slice(0, 600)
    this.#record = next
    await this.#write()
  }

  async #write (): Promise<void> {
    await this.#c.registry.set(releaseKey(this.#c.peerId), this.#record)
  }
}
