import { endorseKey, ENDORSE_PREFIX } from '../../protocols/registry/zones.ts'
import { EndorsementSchema, type Endorsement, type ScheduleRecord } from './lease.ts'
import { establishedThreshold, type Leader } from './leader.ts'
import { compile } from '../../protocols/schema.ts'
import type { Registry } from '../registry/registry.ts'
import type { Logger } from 'pino'

const isEndorsement = compile(EndorsementSchema)

/**
 * `endorse/<zone>/<self>`: the fleet-wide copy of this node's endorsement.
 * The zone's election reads endorsements from the zone-local
 * `scheduler/<zone>/<peer>` keys (renewed with the leases, on the zone
 * topic only); other zones see none of those, so each member also says
 * fleet-wide whom it follows, rewritten only when that changes (a new
 * scheduler, a claim of its own, a withdrawal), never with the renewals.
 */
export class FleetEndorsement {
  readonly key: string
  readonly #registry: Pick<Registry, 'set' | 'delete' | 'list'>
  readonly #logger: Logger
  /** what was last written (or found stored): `peer@term`, or null for none */
  #written: string | null | undefined
  #chain: Promise<void> = Promise.resolve()

  constructor (registry: Pick<Registry, 'set' | 'delete' | 'list'>, zone: string, self: string, logger: Logger) {
    this.#registry = registry
    this.#logger = logger
    this.key = endorseKey(zone, self)
  }

  /** Follow what `scheduler/<zone>/<self>` now holds: its endorsement, or none (a claim, nothing, something unreadable). */
  sync (record: ScheduleRecord | undefined): void {
    const want = record?.kind === 'endorsement' ? record.endorsement : undefined
    const tag = want == null ? null : `${want.follows}@${want.term}`
    if (this.#written === undefined) this.#written = this.#stored()
    if (tag === this.#written) return
    this.#written = tag
    this.#chain = this.#chain.then(async () => {
      if (want == null) await this.#registry.delete(this.key)
      else await this.#registry.set(this.key, { follows: want.follows, term: want.term } satisfies Endorsement)
    }).catch(err => {
      this.#written = undefined
      this.#logger.warn({ err: (err as Error).message }, 'writing the fleet-wide endorsement failed')
    })
  }

  #stored (): string | null {
    const e = this.#registry.list(this.key).find(e => e.key === this.key)
    return e == null || e.deleted || !isEndorsement(e.value) ? null : `${e.value.follows}@${e.value.term}`
  }
}

/**
 * Whether `leader`, named by a summary of `zone`, is established by the
 * zone's fleet-wide endorsements: endorsed by as many of the zone's other
 * live eligible members (`live`) as the election itself asks of a claim
 * (`establishedThreshold`). Only members of the zone can write these keys
 * (ingress and local writes refuse an `endorse/<zone>/…` from any other
 * zone), so a member naming itself scheduler in a summary is not believed
 * outside its zone unless most of the zone follows it.
 */
export function endorsedFromOutside (registry: Pick<Registry, 'list'>, zone: string, leader: Leader, live: ReadonlySet<string>): boolean {
  let endorsements = 0
  for (const e of registry.list(`${ENDORSE_PREFIX}${zone}/`)) {
    const [, keyZone, endorser] = e.key.split('/')
    if (e.deleted || keyZone !== zone || endorser == null || endorser === leader.peerId || !live.has(endorser)) continue
    if (isEndorsement(e.value) && e.value.follows === leader.peerId) endorsements++
  }
  const others = live.has(leader.peerId) ? live.size - 1 : live.size
  return endorsements >= establishedThreshold(others)
}
