import { getPath } from '../../sensors/json-path.ts'

const PLACEHOLDER = /\{\{\s*([A-Za-z0-9_$.[\]-]+)\s*\}\}/g

/**
 * Fill `{{path}}` placeholders from the event. Numbers and strings go in as
 * they are, objects as JSON, missing values as an empty string. Only own
 * properties are read (see getPath).
 */
export function render (template: string, event: Record<string, unknown>): string {
  return template.replace(PLACEHOLDER, (_m, path: string) => {
    const v = getPath(event, path)
    if (v === undefined || v === null) return ''
    if (typeof v === 'object') return JSON.stringify(v)
    if (typeof v === 'number' && !Number.isInteger(v)) return String(Math.round(v * 1e6) / 1e6)
    return String(v)
  })
}
