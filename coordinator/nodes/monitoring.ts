import type { MemberState } from '../../node/membership/membership.ts'

/** One node as the coordinator shows it: liveness and clock from membership, record and health from the registry. */
export interface NodeView {
  peerId: string
  role: string | null
  labels: Record<string, string>
  state: MemberState
  /** ms since epoch when `state` last changed, as this coordinator saw it */
  since: number
  /** the coordinator's own embedded agent */
  self: boolean
  addresses: string[]
  version: string | null
  backend: string | null
  startedAt: number | null
  sensors: SensorView[]
  health: HealthView | null
  /** from the coordinator's own probes of it, in whole seconds so the view changes only when it matters */
  clock: { offsetSec: number | null, skewed: boolean }
  instances: { total: number, running: number, failed: number }
}

export interface SensorView { id: string, type: string, unit?: string, geo?: { lat: number, lon: number, alt?: number } }

export interface HealthView {
  cpuPct: number
  processCpuPct: number
  rssBytes: number
  memFreeBytes: number
  memTotalBytes: number
  load: number[]
  uptimeSec: number
  /** the node's wall clock when it last wrote its health (on change, or every membership.health.maxIntervalMs) */
  ts: number
}

/** An `instance/<peer>/<id>` entry, written by the node that runs it. */
export interface InstanceView {
  node: string
  id: string
  model: string
  version: string | null
  state: string
  reason: string | null
  backend: string | null
  startedAt: number | null
  /** wall-clock ms of the entry's last write */
  updatedAt: number
}

export interface GatewayRow {
  peerId: string
  role: string | null
  labels: Record<string, string>
  state: MemberState
  since: number
  cpuPct: number | null
  memUsedPct: number | null
  rssBytes: number | null
  load1: number | null
  uptimeSec: number | null
  lastHealthReport: number | null
  clockOffsetSec: number | null
  clockSkewed: boolean
  sensors: number
  instances: NodeView['instances']
}

export interface GatewayStatus {
  summary: { total: number, alive: number, suspect: number, dead: number }
  gateways: GatewayRow[]
}

export interface ModelStatus {
  model: string
  versions: string[]
  /** instances by state */
  states: Record<string, number>
  instances: Array<InstanceView & { nodeState: MemberState | 'unknown' }>
}

const round1 = (n: number): number => Math.round(n * 10) / 10

/** The seed's "gateway status": every gateway and server with its vital signs. */
export function gatewayStatus (nodes: NodeView[]): GatewayStatus {
  const rows = nodes.filter(n => n.role === 'gateway' || n.role === 'server')
  const summary = { total: rows.length, alive: 0, suspect: 0, dead: 0 }
  for (const n of rows) summary[n.state]++
  return {
    summary,
    gateways: rows.map(n => ({
      peerId: n.peerId,
      role: n.role,
      labels: n.labels,
      state: n.state,
      since: n.since,
      cpuPct: n.health?.cpuPct ?? null,
      memUsedPct: n.health == null || n.health.memTotalBytes === 0 ? null : round1(100 * (1 - n.health.memFreeBytes / n.health.memTotalBytes)),
      rssBytes: n.health?.rssBytes ?? null,
      load1: n.health?.load[0] ?? null,
      uptimeSec: n.health?.uptimeSec ?? null,
      lastHealthReport: n.health?.ts ?? null,
      clockOffsetSec: n.clock.offsetSec,
      clockSkewed: n.clock.skewed,
      sensors: n.sensors.length,
      instances: n.instances
    }))
  }
}

/** The seed's "model status": every model that has instances, where they run and in what state. */
export function modelStatus (instances: InstanceView[], nodes: NodeView[]): ModelStatus[] {
  const stateOf = new Map(nodes.map(n => [n.peerId, n.state]))
  const byModel = new Map<string, ModelStatus>()
  for (const i of instances) {
    let m = byModel.get(i.model)
    if (m == null) byModel.set(i.model, m = { model: i.model, versions: [], states: {}, instances: [] })
    if (i.version != null && !m.versions.includes(i.version)) m.versions.push(i.version)
    m.states[i.state] = (m.states[i.state] ?? 0) + 1
    m.instances.push({ ...i, nodeState: stateOf.get(i.node) ?? 'unknown' })
  }
  return [...byModel.values()].sort((a, b) => a.model.localeCompare(b.model))
}

const str = (v: unknown): string | null => typeof v === 'string' ? v : null
const num = (v: unknown): number | null => typeof v === 'number' && Number.isFinite(v) ? v : null

/** Read an instance entry defensively: the runtime owns its shape. */
export function instanceView (key: string, value: unknown, updatedAt: number): InstanceView | undefined {
  const [, node, ...rest] = key.split('/')
  if (node == null || rest.length === 0 || value == null || typeof value !== 'object') return undefined
  const v = value as Record<string, unknown>
  const id = rest.join('/')
  return {
    node,
    id,
    model: str(v.model) ?? id,
    version: str(v.version),
    state: str(v.state) ?? 'unknown',
    reason: str(v.reason),
    backend: str(v.backend),
    startedAt: num(v.startedAt),
    updatedAt
  }
}

const MAX_SENSORS = 256
const MAX_TEXT = 256
const text = (v: unknown): string | null => typeof v === 'string' ? v.slice(0, MAX_TEXT) : null

/**
 * A node's sensors as the dashboard shows them, copied field by field:
 * whatever else a node wrote into its record (a `geo` nested a million
 * levels deep, thousands of entries) stays out of the coordinator's views.
 */
export function sensorViews (value: unknown): SensorView[] {
  if (!Array.isArray(value)) return []
  return value.slice(0, MAX_SENSORS).flatMap(s => {
    if (s == null || typeof s !== 'object') return []
    const id = text(s.id)
    const type = text(s.type)
    if (id == null || type == null) return []
    const view: SensorView = { id, type }
    const unit = text(s.unit)
    if (unit != null) view.unit = unit
    const geo = geoView(s.geo)
    if (geo != null) view.geo = geo
    return [view]
  })
}

/** `{lat, lon, alt?}` with finite numbers in range, or nothing. */
export function geoView (value: unknown): SensorView['geo'] | undefined {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const v = value as Record<string, unknown>
  const lat = num(v.lat)
  const lon = num(v.lon)
  if (lat == null || lon == null || Math.abs(lat) > 90 || Math.abs(lon) > 180) return undefined
  const alt = num(v.alt)
  return alt == null ? { lat, lon } : { lat, lon, alt }
}

/** Labels as strings only: a record's labels are the writer's say, and only string pairs are labels. */
export function labelsView (value: unknown): Record<string, string> {
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return {}
  const out: Record<string, string> = {}
  let n = 0
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string' || k.length > 63) continue
    out[k] = v.slice(0, 63)
    if (++n >= 64) break
  }
  return out
}

export function healthView (value: unknown): HealthView | null {
  if (value == null || typeof value !== 'object') return null
  const v = value as Record<string, unknown>
  return {
    cpuPct: num(v.cpuPct) ?? 0,
    processCpuPct: num(v.processCpuPct) ?? 0,
    rssBytes: num(v.rssBytes) ?? 0,
    memFreeBytes: num(v.memFreeBytes) ?? 0,
    memTotalBytes: num(v.memTotalBytes) ?? 0,
    load: Array.isArray(v.load) ? v.load.filter((x): x is number => typeof x === 'number').slice(0, 3) : [],
    uptimeSec: num(v.uptimeSec) ?? 0,
    ts: num(v.ts) ?? 0
  }
}
