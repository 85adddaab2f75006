import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { RUNTIME_FILE, type RuntimeInfo } from '../agent.ts'
import { table } from './table.ts'
import type { Member } from '../membership/membership.ts'

export const STATUS_USAGE = 'gatemesh status [--api URL | --data DIR] [--json]'
export const DEFAULT_API = 'http://127.0.0.1:7401'

export interface StatusResponse {
  self: { peerId: string, role: string, version: string, localHealth?: { score: number, healthy: boolean }, clock?: { skewed: boolean, offsetMs: number | null, peers: number, disagreeing: number } }
  members: Member[]
  registry: { size: number }
}

export async function fetchStatus (api: string): Promise<StatusResponse> {
  const res = await fetch(new URL('/v1/status', api), { signal: AbortSignal.timeout(5000) })
  if (!res.ok) throw new Error(`${api} answered ${res.status}`)
  return await res.json() as StatusResponse
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
    warnings.map(w => `\n${w}`).join('')
}

export async function resolveApi (values: { api?: string | undefined, data?: string | undefined }): Promise<string> {
  if (values.api != null) return values.api
  if (values.data != null) {
    const info = JSON.parse(await readFile(join(resolve(values.data), RUNTIME_FILE), 'utf8')) as RuntimeInfo
    return info.api
  }
  return process.env.GATEMESH_API ?? DEFAULT_API
}

export async function statusCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { api: { type: 'string' }, data: { type: 'string' }, json: { type: 'boolean' } } })
  const status = await fetchStatus(await resolveApi(values))
  console.log(values.json === true ? JSON.stringify(status, null, 2) : renderMembers(status))
}
