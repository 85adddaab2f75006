import { parseArgs } from 'node:util'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { table } from './table.ts'
import type { Member } from '../membership/membership.ts'
import type { ZonesStatus } from '../api/server.ts'

export const STATUS_USAGE = 'gatemesh status [--api URL | --data DIR] [--token-file FILE] [--json]'

export interface StatusResponse {
  self: { peerId: string, role: string, version: string, localHealth?: { score: number, healthy: boolean }, clock?: { skewed: boolean, offsetMs: number | null, peers: number, disagreeing: number } }
  members: Member[]
  registry: { size: number }
  zones?: ZonesStatus
}

/** `/v1/status` of an agent: `api` is a URL (loopback reads need no token) or a client. */
export async function fetchStatus (api: string | AgentClient): Promise<StatusResponse> {
  const client = typeof api === 'string' ? new AgentClient(api, undefined) : api
  return (await client.request<StatusResponse>('GET', '/v1/status', { timeoutMs: 5000 })).body
}

const short = (id: string): string => id.length > 16 ? `…${id.slice(-12)}` : id

export function renderMembers (status: StatusResponse): string {
  const rows = status.members
    .sort((a, b) => (a.role ?? '').localeCompare(b.role ?? '') || a.peerId.localeCompare(b.peerId))
    .map(m => [
      short(m.peerId) + (m.self ? ' *' : ''),
      m.role ?? '?',
      m.state,
      m.lastSeenMs == null ? '-' : `${(m.lastSeenMs / 1000).toFixed(1)}s`,
      m.health == null ? '-' : `${m.health.cpuPct.toFixed(0)}%`,
      m.health == null ? '-' : `${Math.round(m.health.rssBytes / 1048576)}MB`,
      m.health == null ? '-' : m.health.load.map(l => l.toFixed(1)).join(' '),
      m.clockOffsetMs == null ? '-' : `${m.clockOffsetMs > 0 ? '+' : ''}${(m.clockOffsetMs / 1000).toFixed(1)}s${m.clockSkewed === true ? ' SKEWED' : ''}`,
      Object.entries(m.labels).map(([k, v]) => `${k}=${v}`).join(',')
    ])
  const warnings: string[] = []
  const { clock, localHealth } = status.self
  if (clock?.skewed === true) warnings.push(`WARNING: this node's clock disagrees with ${clock.disagreeing} of ${clock.peers} peers (${((clock.offsetMs ?? 0) / 1000).toFixed(0)} s): fix its time (NTP)`)
  if (localHealth?.healthy === false) warnings.push(`this node doubts its own timeliness (Lifeguard score ${localHealth.score}): it is slow or was stalled, and defers verdicts on others`)
  return table(['PEER', 'ROLE', 'STATE', 'SEEN', 'CPU', 'RSS', 'LOAD', 'CLOCK', 'LABELS'], rows) +
    `\n${status.members.length} members, ${status.registry.size} registry keys (seen from ${short(status.self.peerId)})` +
    warnings.map(w => `\n${w}`).join('') +
    renderZones(status.zones)
}

/** Every zone as its scheduler summed it up: how this node sees the zones whose health and instances it does not keep. */
export function renderZones (zones: ZonesStatus | undefined): string {
  if (zones == null || zones.summaries.length === 0) return ''
  const pct = (n: number | null): string => n == null ? '-' : `${n.toFixed(0)}%`
  const rows = zones.summaries.map(z => [
    z.zone + (z.zone === zones.zone ? ' *' : ''),
    `${short(z.scheduler)}${z.current ? '' : ' (old)'}`,
    `${z.members.alive}/${z.members.suspect}/${z.members.dead}`,
    Object.entries(z.instances).map(([s, n]) => `${s} ${n}`).join(', ') || '-',
    pct(z.cpuPct),
    pct(z.memoryPct),
    `${(z.ageMs / 1000).toFixed(0)}s`
  ])
  const keeps = zones.followsAll ? 'every zone' : `zone ${zones.zone}`
  return `\n\n${table(['ZONE', 'SCHEDULER', 'ALIVE/SUSPECT/DEAD', 'INSTANCES', 'CPU', 'MEMORY', 'AGE'], rows)}\nthis node keeps the health and instances of ${keeps}; the rest it sees through these summaries`
}

export async function statusCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...AGENT_OPTIONS, json: { type: 'boolean' } } })
  const status = await fetchStatus(await AgentClient.from(values, { reading: true }))
  console.log(values.json === true ? JSON.stringify(status, null, 2) : renderMembers(status))
}
