/**
 * Read `a.b[0].c` out of parsed JSON. Only own properties are followed, so a
 * path can never reach `__proto__` or `constructor`.
 */
export function getPath (value: unknown, path: string): unknown {
  let current = value
  for (const part of path.split('.')) {
    const m = /^([^[\]]+)((?:\[\d+\])*)$/.exec(part)
    if (m == null) return undefined
    current = own(current, m[1]!)
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) current = own(current, Number(idx[1]))
    if (current === undefined) return undefined
  }
  return current
}

function own (obj: unknown, key: string | number): unknown {
  if (obj == null || typeof obj !== 'object') return undefined
  return Object.hasOwn(obj, key) ? (obj as Record<string | number, unknown>)[key] : undefined
}
