import { askLogs, LOG_QUERY_PROTOCOL, MAX_PAGE_ENTRIES } from '../../protocols/log-query/index.ts'
import { mergeByTime } from './merge.ts'
import type { LogQuery, LogStore } from '../../node/logs/log-store.ts'
import type { MemberState } from '../../node/membership/membership.ts'
import type { Stream } from '@libp2p/interface'
import type { Logger } from 'pino'

export const DEFAULT_NODE_TIMEOUT_MS = 5_000

/** One log line as the API returns it: pino's fields, with `node` set to where it came from. */
export interface LogEntry {
  time: number
  level: string
  node: string
  service?: string
  msg?: string
  [field: string]: unknown
}

/** How one node took part in a search. */
export interface NodeReport {
  peerId: string
  state: MemberState
  /** lines it contributed to the result */
  returned: number
  /** why it could not answer (refused, timed out, unreachable, dead) */
  error?: string
}

export interface SearchQuery extends LogQuery {
  /** peer ids to ask; all live members when absent */
  nodes?: string[]
  limit: number
}

export interface LogSearchComponents {
  /** the coordinator's own agent: searched in-process */
  self: { peerId: string, store: Pick<LogStore, 'query'> }
  members(): ReadonlyArray<{ peerId: string, state: MemberState, addresses: string[] }>
  dial(peerId: string, addresses: string[], protocol: string, signal: AbortSignal): Promise<Stream>
  logger: Logger
}

export interface LogSearchInit {
  /** Per node: longest wait for a connection and for each page. @default DEFAULT_NODE_TIMEOUT_MS */
  nodeTimeoutMs?: number
}

export interface Search {
  /** merged lines, in the query's order, at most `limit` */
  entries: AsyncGenerator<LogEntry>
  /** per-node outcome; complete once `entries` is done */
  report(): NodeReport[]
}

function parse (line: string, node: string): LogEntry | undefined {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const entry = value as Record<string, unknown>
  if (typeof entry.time !== 'number') return undefined
  // a node speaks for itself only: what it claims in `node` is overwritten
  return { ...entry, time: entry.time, level: typeof entry.level === 'string' ? entry.level : 'info', node }
}

/**
 * Searches the logs of every live node at once — each over the mesh
 * log-query protocol, the coordinator's own in-process — and merges the
 * answers by time. Nothing is stored here: a node's logs are searchable
 * while it is up, and a node that cannot answer is reported, not fatal.
 */
export class LogSearch {
  readonly #c: LogSearchComponents
  readonly #timeoutMs: number

  constructor (components: LogSearchComponents, init: LogSearchInit = {}) {
    this.#c = components
    this.#timeoutMs = init.nodeTimeoutMs ?? DEFAULT_NODE_TIMEOUT_MS
  }

  search (query: SearchQuery, signal?: AbortSignal): Search {
    const order = query.order ?? 'desc'
    const members = new Map(this.#c.members().map(m => [m.peerId, m]))
    const wanted = query.nodes ?? [...members.keys()]
    const reports = new Map<string, NodeReport>()
    const sources: Array<AsyncIterator<LogEntry>> = []
    for (const peerId of new Set(wanted)) {
      const member = members.get(peerId)
      const report: NodeReport = { peerId, state: member?.state ?? 'dead', returned: 0 }
      reports.set(peerId, report)
      if (member == null) report.error = 'not a member'
      else if (member.state === 'dead') report.error = 'node is dead; its logs are searchable while it is up'
      else sources.push(this.#source(peerId, member.addresses, query, order, report, signal))
    }
    const { limit } = query
    async function * limited (): AsyncGenerator<LogEntry> {
      let n = 0
      if (n >= limit) return
      for await (const entry of mergeByTime(sources, order)) {
        yield entry
        if (++n >= limit) return
      }
    }
    return { entries: limited(), report: () => [...reports.values()] }
  }

  async * #source (peerId: string, addresses: string[], query: SearchQuery, order: 'asc' | 'desc', report: NodeReport, signal?: AbortSignal): AsyncGenerator<LogEntry> {
    const { nodes: _nodes, limit, ...filters } = query
    try {
      const lines = peerId === this.#c.self.peerId
        ? this.#local({ ...filters, order }, signal)
        : await this.#remote(peerId, addresses, { ...filters, order }, limit, signal)
      for await (const line of lines) {
        const entry = parse(line, peerId)
        if (entry == null) continue
        report.returned++
        yield entry
      }
    } catch (err: any) {
      if (signal?.aborted === true) return
      report.error = err.name === 'TimeoutError' || err.name === 'AbortError' ? 'timed out' : err.message
      this.#c.logger.info({ peer: peerId, err: err.message }, 'node did not answer a log search')
    }
  }

  async * #local (query: LogQuery, signal?: AbortSignal): AsyncGenerator<string> {
    yield * this.#c.self.store.query(query, signal)
  }

  async #remote (peerId: string, addresses: string[], query: LogQuery, limit: number, signal?: AbortSignal): Promise<AsyncGenerator<string>> {
    const dialSignal = signal == null ? AbortSignal.timeout(this.#timeoutMs) : AbortSignal.any([signal, AbortSignal.timeout(this.#timeoutMs)])
    const stream = await this.#c.dial(peerId, addresses, LOG_QUERY_PROTOCOL, dialSignal)
    const pageSize = Math.min(MAX_PAGE_ENTRIES, limit)
    const pages = askLogs(stream, { query: { ...query, order: query.order ?? 'desc' }, limit, pageSize }, { pageTimeoutMs: this.#timeoutMs, ...(signal == null ? {} : { signal }) })
    return (async function * () {
      for await (const page of pages) yield * page
    })()
  }
}
