import { ConfigError } from '../config/config.ts'
import { UsageError } from './errors.ts'

/** `k=v,k2=v2` → `{ k: 'v', k2: 'v2' }`; label names are checked by the config schema. */
export function parseLabels (text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {}
  if (text == null || text === '') return labels
  for (const pair of text.split(',')) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new ConfigError(`config.labels: "${pair}" is not key=value`, 'config.labels')
    labels[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim()
  }
  return labels
}

export function parsePort (text: string | undefined, flag: string): number | undefined {
  if (text == null) return undefined
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${flag}: "${text}" is not a port number (0-65535)`)
  return n
}

export function requireArg (value: string | undefined, what: string): string {
  if (value == null || value === '') throw new UsageError(`missing ${what}`)
  return value
}
