import { readFile, writeFile } from 'node:fs/promises'
import { createPublicKey, type KeyObject } from 'node:crypto'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { issueNodeCertificate } from '../../../node/identity/certificate.ts'
import { loadFleet } from '../../../node/identity/fleet.ts'
import { compareEntries, signEntry } from '../../../node/registry/entry.ts'
import { schedulerKey } from '../../../node/scheduler/keys.ts'
import { DEFAULT_ZONE, endorseKey, zoneSummaryKey } from '../../../protocols/registry/zones.ts'
import { zoneOfMember, zoneSchedulers, type ScheduleInit } from './schedule.ts'
import { VERSION } from '../../../node/version.ts'
import { aliveBytes, type MemberRecord } from '../../../protocols/swim/wire.ts'
import type { WireEntry } from '../../../protocols/registry/wire.ts'
import type { PrivateKey } from '@libp2p/interface'

/** One simulated member as the parent hands it to the generators (the key stays in a 0600 file). */
export interface MemberSpec {
  id: string
  /** protobuf private key, base64 */
  key: string
  cert: string
  /** the proxy port its identity answers on */
  port: number
  role: 'gateway' | 'server'
  /** its certificate's zone; zone index 0 is the agent's */
  zone: string
  zoneIndex: number
  /** index of its zone's scheduler among the members */
  scheduler: number
}

/** The zone names of a fleet: one zone is the default zone (no label), as in a fleet without zones. */
export function zoneName (zoneIndex: number, zones: number): string {
  return zones <= 1 ? DEFAULT_ZONE : `z${zoneIndex}`
}

export const zoneLabels = (zone: string): Record<string, string> => zone === DEFAULT_ZONE ? {} : { zone }

export interface FleetFile {
  fleetPublicKeyPem: string
  /** base64 */
  networkKey: string
  /** wall-clock ms every generator's schedule counts from */
  epoch: number
  members: MemberSpec[]
}

export interface Member extends MemberSpec {
  privateKey: PrivateKey
  addr: string
}

/**
 * Keys and fleet certificates for `count` members, signed by the bench's
 * own fleet key, in zones as `schedule` lays them out; each zone's first
 * member is a server (the zone's scheduler), the rest gateways, as a real
 * fleet would have them.
 */
export async function makeMembers (fleetDir: string, ports: number[], schedule: ScheduleInit): Promise<MemberSpec[]> {
  const fleet = await loadFleet(fleetDir)
  const schedulers = zoneSchedulers(schedule)
  const out: MemberSpec[] = []
  for (const [i, port] of ports.entries()) {
    const key = await generateKeyPair('Ed25519')
    const id = peerIdFromPrivateKey(key).toString()
    const zoneIndex = zoneOfMember(schedule, i)
    const zone = zoneName(zoneIndex, schedulers.length)
    const role = schedulers.includes(i) ? 'server' : 'gateway'
    const cert = await issueNodeCertificate(fleet.privateKey, { peerId: id, role, labels: zoneLabels(zone), fleetId: fleet.fleetId })
    out.push({ id, key: Buffer.from(privateKeyToProtobuf(key)).toString('base64'), cert, port, role, zone, zoneIndex, scheduler: schedulers[zoneIndex] ?? 0 })
  }
  return out
}

export async function writeFleetFile (path: string, fleetDir: string, members: MemberSpec[], epoch: number): Promise<void> {
  const fleet = await loadFleet(fleetDir)
  const file: FleetFile = { fleetPublicKeyPem: fleet.publicKeyPem, networkKey: Buffer.from(fleet.networkKey).toString('base64'), epoch, members }
  await writeFile(path, JSON.stringify(file), { mode: 0o600 })
}

/** Deterministic stand-ins for what a member writes: every generator process signs the same bytes. */
export function healthValue (m: number, seq: number, ts: number): Record<string, unknown> {
  return {
    cpuPct: 3 + ((m * 7 + seq * 13) % 20),
    processCpuPct: 1 + ((m * 3 + seq * 5) % 6),
    rssBytes: 90_000_000 + ((m * 7919 + seq * 104729) % 20_000_000),
    memFreeBytes: 1_500_000_000 + ((m * 31 + seq * 17) % 400) * 1_000_000,
    memTotalBytes: 4_294_967_296,
    load: [round1(0.2 + ((m + seq) % 9) / 10), 0.4, 0.5],
    uptimeSec: 3600 + Math.round(seq * 30),
    seq,
    ts,
    instances: { total: 0, running: 0 }
  }
}

const round1 = (n: number): number => Math.round(n * 10) / 10

/** What a zone's scheduler writes to `zone/<zone>/<self>` in an idle fleet (the same bytes in every generator). */
export function summaryValue (m: Pick<MemberSpec, 'id' | 'zone'>, ts: number): Record<string, unknown> {
  return { zone: m.zone, scheduler: m.id, term: 1, at: Math.floor(ts), members: { alive: 200, suspect: 0, dead: 0 }, instances: {}, reporting: 200, cpuPct: 11.5, memoryPct: 58.2 }
}

/**
 * The fleet as every simulated member holds it: signed SWIM alive records
 * and the registry replica (node records, endorsements, the scheduler's
 * claim, health), plus what the agent under test wrote, as gossip and sync
 * bring it.
 */
export class FleetState {
  readonly members: Member[]
  readonly fleetPublicKey: KeyObject
  readonly networkKey: Uint8Array
  readonly epoch: number
  readonly byId = new Map<string, Member>()
  /** registry replica: key → entry */
  readonly entries = new Map<string, WireEntry>()
  /** SWIM alive records by member id (refutations replace them) */
  readonly alive = new Map<string, MemberRecord>()
  agentRecord?: MemberRecord

  private constructor (file: FleetFile) {
    this.fleetPublicKey = createPublicKey(file.fleetPublicKeyPem)
    this.networkKey = new Uint8Array(Buffer.from(file.networkKey, 'base64'))
    this.epoch = file.epoch
    this.members = file.members.map(m => ({
      ...m,
      privateKey: privateKeyFromProtobuf(Buffer.from(m.key, 'base64')),
      addr: `/ip4/127.0.0.1/tcp/${m.port}/p2p/${m.id}`
    }))
    for (const m of this.members) this.byId.set(m.id, m)
  }

  static async load (path: string): Promise<FleetState> {
    const state = new FleetState(JSON.parse(await readFile(path, 'utf8')) as FleetFile)
    await state.#init()
    return state
  }

  /** The agent's zone (zone index 0). */
  get agentZone (): string {
    return this.members.find(m => m.zoneIndex === 0)?.zone ?? DEFAULT_ZONE
  }

  /** A member of the agent's zone: it shares the zone's health and instances with the agent. */
  inAgentZone (m: Pick<MemberSpec, 'zoneIndex'>): boolean {
    return m.zoneIndex === 0
  }

  async #init (): Promise<void> {
    const t0 = this.epoch - 60_000
    for (const [i, m] of this.members.entries()) {
      await this.aliveAt(m, Math.floor(this.epoch / 1000))
      const leader = this.members[m.scheduler]!.id
      const record = {
        role: m.role,
        labels: zoneLabels(m.zone),
        addresses: [m.addr],
        sensors: [],
        backend: 'onnxruntime',
        version: VERSION,
        cert: m.cert,
        startedAt: t0,
        api: 'http://127.0.0.1:7401'
      }
      this.put(await this.sign(m, `node/${m.id}`, record, t0))
      // other zones' leases, endorsements and health never reach the agent: it is not of their zone
      if (this.inAgentZone(m)) {
        this.put(await this.sign(m, schedulerKey(m.zone, m.id), m.scheduler === i ? { term: 1, leaseMs: 3000, since: t0 } : { follows: leader, term: 1 }, t0 + 1))
        this.put(await this.sign(m, `health/${m.id}`, healthValue(i, 0, t0), t0 + 2))
      }
      if (m.scheduler === i) this.put(await this.sign(m, zoneSummaryKey(m.zone, m.id), summaryValue(m, t0), t0 + 3))
      // whom it follows, fleet-wide (how other zones believe the summary): written once, never renewed
      else this.put(await this.sign(m, endorseKey(m.zone, m.id), { follows: leader, term: 1 }, t0 + 3))
    }
  }

  /** Sign and hold `m`'s alive claim at incarnation `inc`. */
  async aliveAt (m: Member, inc: number): Promise<MemberRecord> {
    const addrs = [m.addr]
    const sig = Buffer.from(await m.privateKey.sign(aliveBytes(m.id, inc, addrs))).toString('base64url')
    const record: MemberRecord = { id: m.id, inc, addrs, sig }
    this.alive.set(m.id, record)
    return record
  }

  async sign (m: Member, key: string, value: unknown, ts: number): Promise<WireEntry> {
    return await signEntry(m.privateKey, { k: key, v: JSON.stringify(value), t: [Math.floor(ts), 0], w: m.id })
  }

  /** Keep the winning version of the entry's key. */
  put (e: WireEntry): void {
    const current = this.entries.get(e.k)
    if (current == null || compareEntries(e, current) > 0) this.entries.set(e.k, e)
  }

  /** SWIM records every member holds: ours and the agent's. */
  records (): MemberRecord[] {
    const out = [...this.alive.values()]
    if (this.agentRecord != null) out.push(this.agentRecord)
    return out
  }

  /** A record about the agent from the agent: keep the newest. */
  noteAgentRecord (r: MemberRecord, agentId: string): void {
    if (r.id !== agentId || r.acc != null) return
    if (this.agentRecord == null || r.inc >= this.agentRecord.inc) this.agentRecord = r
  }
}
