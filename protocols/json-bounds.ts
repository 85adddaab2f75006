/**
 * Bounds on JSON text from outside, checked before anything parses and
 * walks it: `JSON.parse` itself copes with any depth, but
 * `JSON.stringify`, `structuredClone`, schema validators and most code that
 * walks a value recurse, and a value nested a few thousand levels deep
 * overflows their stack. The scan below does not recurse.
 */

/**
 * Deepest nesting of arrays and objects in `text`. Stops as soon as the
 * depth passes `limit` and returns that depth. Does not check that the text
 * is valid JSON (the parser does that afterwards).
 */
export function jsonDepth (text: string, limit = Number.POSITIVE_INFINITY): number {
  let depth = 0
  let max = 0
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      // skip the string: its closing quote is the next one not escaped by an odd run of backslashes
      let j = text.indexOf('"', i + 1)
      while (j !== -1) {
        let slashes = 0
        while (text.charCodeAt(j - 1 - slashes) === 0x5c) slashes++
        if (slashes % 2 === 0) break
        j = text.indexOf('"', j + 1)
      }
      if (j === -1) return max
      i = j
    } else if (c === 0x5b || c === 0x7b) {
      depth++
      if (depth > max) {
        max = depth
        if (max > limit) return max
      }
    } else if (c === 0x5d || c === 0x7d) {
      depth--
    }
  }
  return max
}

/** True when `text` nests no deeper than `maxDepth`. */
export function withinDepth (text: string, maxDepth: number): boolean {
  return jsonDepth(text, maxDepth) <= maxDepth
}
