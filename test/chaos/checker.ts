/**
 * What the checker counts, from what the receivers saw, what the clients
 * were answered and what every agent says once the faults are over.
 */
import type { Delivery } from './lab.ts'
import type { PredictRecord } from './workload.ts'

export interface NotificationFigures {
  /** asked-for notifications (anomalies answered 200) a channel never delivered, plus sensor notifications dead-lettered or still queued */
  lost: number
  /** one event delivered under more than one idempotency key: a repeat no deduping receiver can drop */
  duplicates: number
  /**
   * Of `duplicates`: predict-driven events whose copies were produced by
   * different agents. The router sends a request whose replica did not
   * answer in time to another replica; both ran it, and both ran its rules.
   */
  duplicatesFromPredictRetries: number
  /** the same key delivered again (at-least-once retries the receivers dropped by key) */
  redeliveriesDeduped: number
  expectedFromPredicts: number
  /** anomaly answers whose row another answer also had: left out of the exact count */
  ambiguous: number
  deliveredNotify: number
  deliveredSense: number
  /** delivered events from predicts the client saw fail (run, but the answer lost): not counted as lost or duplicate */
  fromFailedPredicts: number
  /** up to 10 of each, for the report */
  missing: string[]
  duplicated: string[]
}

interface Parsed { ch: string, key: string, identity: string, instance: string, node: string }

function parse (d: Delivery): Parsed | undefined {
  try {
    const e = JSON.parse(d.body) as { instance?: string, output?: unknown, node?: string, sensor?: string, reading?: { ts?: number, value?: number } }
    // predict-driven: the answered row names the request. Sensor-driven: node, sensor, reading time and
    // value (a simulated sensor whose timer fired late emits the readings it owes at once, with one time)
    const identity = e.instance === 'notify' ? JSON.stringify(e.output) : `${String(e.node)}|${String(e.sensor)}|${String(e.reading?.ts)}|${String(e.reading?.value)}`
    return { ch: d.ch, key: d.key, identity, instance: String(e.instance), node: String(e.node) }
  } catch {
    return undefined
  }
}

/**
 * `leftover`: sensor-driven jobs the agents dead-lettered or still hold
 * once everything has converged (their events cannot be predicted by the
 * clients, so the agents' own books count them).
 */
export function notificationFigures (deliveries: Delivery[], predicts: PredictRecord[], leftover: number): NotificationFigures {
  const parsed = deliveries.map(parse).filter((p): p is Parsed => p != null)
  const rows = new Map<string, number>()
  for (const p of predicts) if (p.ok && p.anomaly === true && p.row != null) rows.set(p.row, (rows.get(p.row) ?? 0) + 1)
  const expected = [...rows].filter(([, n]) => n === 1).map(([r]) => r)
  const ambiguous = [...rows].filter(([, n]) => n > 1).length
  const missing: string[] = []
  for (const ch of ['http', 'mqtt']) {
    const got = new Set(parsed.filter(p => p.ch === ch && p.instance === 'notify').map(p => p.identity))
    for (const r of expected) if (!got.has(r)) missing.push(`${ch} ${r}`)
  }
  // per channel and event: the distinct keys it came with
  const keys = new Map<string, Set<string>>()
  const nodes = new Map<string, Set<string>>()
  let redeliveries = 0
  const seen = new Set<string>()
  for (const p of parsed) {
    const id = `${p.ch} ${p.instance} ${p.identity}`
    if (!keys.has(id)) keys.set(id, new Set())
    keys.get(id)!.add(p.key)
    if (!nodes.has(id)) nodes.set(id, new Set())
    nodes.get(id)!.add(p.node)
    const k = `${p.ch} ${p.key}`
    if (seen.has(k)) redeliveries++
    seen.add(k)
  }
  const duplicated = [...keys].filter(([, ks]) => ks.size > 1)
  const okRows = new Set(rows.keys())
  return {
    lost: missing.length + leftover,
    duplicates: duplicated.reduce((n, [, ks]) => n + ks.size - 1, 0),
    duplicatesFromPredictRetries: duplicated.filter(([id]) => id.split(' ')[1] === 'notify' && nodes.get(id)!.size > 1).reduce((n, [, ks]) => n + ks.size - 1, 0),
    redeliveriesDeduped: redeliveries,
    expectedFromPredicts: expected.length,
    ambiguous,
    deliveredNotify: parsed.filter(p => p.instance === 'notify' && p.ch === 'http').length,
    deliveredSense: parsed.filter(p => p.instance === 'sense').length,
    fromFailedPredicts: new Set(parsed.filter(p => p.instance === 'notify' && !okRows.has(p.identity)).map(p => p.identity)).size,
    missing: missing.slice(0, 10),
    duplicated: duplicated.slice(0, 10).map(([id, ks]) => `${id} keys ${[...ks].join(',')}`)
  }
}
