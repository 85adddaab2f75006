import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import fc from 'fast-check'

/**
 * Shared pieces of the fuzz suite: the seed and run count (from the
 * environment, so `npm run fuzz -- --seed S --runs N` and a failing seed
 * printed by `npm test` replay exactly), the mutators that turn a valid
 * message into a hostile one, and the checks every fuzz file makes
 * (no uncaught error, bounded heap).
 */

/** The seed `npm test` uses: fixed, so the suite is the same on every run. */
export const DEFAULT_SEED = 15
/** Runs per property in `npm test`: each fuzz file stays well under a minute on a loaded machine. */
export const DEFAULT_RUNS = 40

export const SEED = intFromEnv('GATEMESH_FUZZ_SEED', DEFAULT_SEED)
export const RUNS = intFromEnv('GATEMESH_FUZZ_RUNS', DEFAULT_RUNS)

function intFromEnv (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw == null || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n)) throw new Error(`${name}=${raw}: not an integer`)
  return n
}

/** fast-check parameters for one property: the seed differs per property so they do not all draw the same values. */
export function params (salt: string, runs = RUNS): fc.Parameters<unknown> {
  let h = SEED | 0
  for (let i = 0; i < salt.length; i++) h = Math.imul(h ^ salt.charCodeAt(i), 0x01000193)
  return { seed: h | 0, numRuns: runs, endOnFailure: true }
}

/** How to replay what this file just ran. */
export function banner (file: string): string {
  return `fuzz ${file}: seed ${SEED}, ${RUNS} runs per property (replay: GATEMESH_FUZZ_SEED=${SEED} GATEMESH_FUZZ_RUNS=${RUNS} npx tap test/fuzz/${file}.test.ts)`
}

// ---------------------------------------------------------------- mutations

/** A spot in a JSON value: the keys and indexes leading to it. */
type Path = Array<string | number>

function pathsOf (value: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  out.push(prefix)
  if (Array.isArray(value)) value.forEach((v, i) => pathsOf(v, [...prefix, i], out))
  else if (value != null && typeof value === 'object') for (const [k, v] of Object.entries(value)) pathsOf(v, [...prefix, k], out)
  return out
}

const HOLE = '\u0000gatemesh-fuzz-hole\u0000'
const HOLE_JSON = JSON.stringify(HOLE)

/** JSON text of `value` with the value at `path` replaced by the raw JSON text `replacement`. */
function splice (value: unknown, path: Path, replacement: string): string {
  if (path.length === 0) return replacement
  const copy = structuredClone(value) as any
  let at = copy
  for (const step of path.slice(0, -1)) at = at[step]
  at[path[path.length - 1]!] = HOLE
  return JSON.stringify(copy).replace(HOLE_JSON, () => replacement)
}

/** Without the field at `path` (or the array item). */
function remove (value: unknown, path: Path): string {
  if (path.length === 0) return ''
  const copy = structuredClone(value) as any
  let at = copy
  for (const step of path.slice(0, -1)) at = at[step]
  const last = path[path.length - 1]!
  if (Array.isArray(at)) at.splice(last as number, 1)
  else delete at[last]
  return JSON.stringify(copy)
}

/** Values of the wrong type, and edge values of the right one. */
const wrongValue = fc.oneof(
  fc.constantFrom('null', 'true', 'false', '0', '-1', '1e308', '-1e308', '1.5', '9007199254740993', '""', '[]', '{}', '"__proto__"',
    '{"__proto__":{"polluted":true}}', '{"constructor":{"prototype":{"polluted":true}}}', '"../../../../etc/passwd"', '"\\u0000"', '"\\ud800"', '[null]', '[[[]]]'),
  fc.json({ maxDepth: 3 }),
  fc.string({ maxLength: 40 }).map(s => JSON.stringify(s)),
  fc.integer().map(String),
  fc.double({ noNaN: true }).filter(Number.isFinite).map(String)
)

/** Sizes that cross every limit in the codebase (64 KiB strings, 1–16 MiB frames). */
const hugeValue = fc.oneof(
  fc.constantFrom(1_000, 70_000, 300_000, 1_100_000, 4_200_000).map(n => JSON.stringify('x'.repeat(n))),
  fc.constantFrom(1_000, 100_000, 300_000).map(n => `[${Array(n).fill('0').join(',')}]`),
  fc.constantFrom(1_000, 50_000).map(n => `{${Array.from({ length: n }, (_, i) => `"k${i}":${i}`).join(',')}}`)
)

/** Nesting far past any sane depth (a recursive walker would overflow the stack). */
const deepValue = fc.constantFrom(100, 2_000, 20_000, 200_000).chain(depth =>
  fc.constantFrom(
    '['.repeat(depth) + ']'.repeat(depth),
    '{"a":'.repeat(depth) + '1' + '}'.repeat(depth),
    '[{"a":'.repeat(depth >> 1) + 'null' + '}]'.repeat(depth >> 1)
  ))

export type Mutation = { kind: string, text: string }

/**
 * A valid message (one of `valid`) mutated into JSON text: a field of the
 * wrong type, a huge value, deep nesting, an unknown field, a missing
 * field, or the valid message itself (a control: it must still be served).
 */
export function mutatedJson (valid: readonly unknown[]): fc.Arbitrary<Mutation> {
  return fc.constantFrom(...valid).chain(value => {
    const paths = pathsOf(value)
    const path = fc.constantFrom(...paths)
    // a value with nothing inside it ({}, [], 'x') has only the root: nothing to
    // remove (a filter that can never pass would make fast-check spin for ever)
    const inner = paths.filter(p => p.length > 0)
    const removals = inner.length === 0 ? [] : [{ weight: 1, arbitrary: fc.constantFrom(...inner).map(p => ({ kind: `without ${p.join('.')}`, text: remove(value, p) })) }]
    return fc.oneof(
      { weight: 1, arbitrary: fc.constant({ kind: 'valid', text: JSON.stringify(value) }) },
      { weight: 4, arbitrary: fc.tuple(path, wrongValue).map(([p, v]) => ({ kind: `wrong type at ${p.join('.') || '(root)'}`, text: splice(value, p, v) })) },
      { weight: 2, arbitrary: fc.tuple(path, hugeValue).map(([p, v]) => ({ kind: `huge at ${p.join('.') || '(root)'}`, text: splice(value, p, v) })) },
      { weight: 2, arbitrary: fc.tuple(path, deepValue).map(([p, v]) => ({ kind: `deep at ${p.join('.') || '(root)'}`, text: splice(value, p, v) })) },
      { weight: 1, arbitrary: fc.tuple(path, fc.constantFrom('surprise', '__proto__', 'constructor', '')).map(([p, k]) => ({ kind: `extra field ${k} at ${p.join('.') || '(root)'}`, text: splice(value, p, `{${JSON.stringify(k)}:1}`) })) },
      ...removals
    )
  })
}

/** Byte-level damage: bit flips, truncation, or junk appended. */
export function damagedBytes (bytes: Uint8Array): fc.Arbitrary<{ kind: string, bytes: Uint8Array }> {
  if (bytes.length === 0) return fc.constant({ kind: 'empty', bytes })
  return fc.oneof(
    fc.array(fc.tuple(fc.nat(bytes.length - 1), fc.nat(7)), { minLength: 1, maxLength: 8 }).map(flips => {
      const out = new Uint8Array(bytes)
      for (const [i, bit] of flips) out[i]! ^= 1 << bit
      return { kind: `${flips.length} bit flips`, bytes: out }
    }),
    fc.nat(bytes.length - 1).map(n => ({ kind: `truncated to ${n}`, bytes: bytes.slice(0, n) })),
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map(junk => ({ kind: 'junk appended', bytes: concat(bytes, junk) }))
  )
}

export function concat (a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

/** Text or its bytes after damage: what a hostile peer or client sends. */
export function hostileText (valid: readonly unknown[]): fc.Arbitrary<{ kind: string, bytes: Uint8Array }> {
  return mutatedJson(valid).chain(m => {
    const bytes = new TextEncoder().encode(m.text)
    return fc.oneof(
      { weight: 3, arbitrary: fc.constant({ kind: m.kind, bytes }) },
      { weight: 1, arbitrary: damagedBytes(bytes).map(d => ({ kind: `${m.kind}, ${d.kind}`, bytes: d.bytes })) }
    )
  })
}

// ---------------------------------------------------------------- process checks

/** Errors that mean code walked a hostile value without checking it. */
export const BUG_ERRORS = new Set(['TypeError', 'RangeError', 'ReferenceError', 'SyntaxError', 'InternalError'])

/** Whether an error is one a careless walk throws rather than a refusal. */
export function isBugError (err: unknown): boolean {
  if (!(err instanceof Error)) return true
  // SyntaxError from JSON.parse wrapped as a cause is fine; a bare one escaping is not
  return BUG_ERRORS.has(err.constructor.name) || BUG_ERRORS.has(err.name)
}

/** Records every uncaught exception and unhandled rejection while a fuzz file runs. */
export class CrashWatch {
  readonly crashes: string[] = []
  readonly #onError = (err: unknown): void => { this.crashes.push(`uncaught: ${describe(err)}`) }
  readonly #onRejection = (err: unknown): void => { this.crashes.push(`unhandled rejection: ${describe(err)}`) }

  constructor () {
    process.on('uncaughtException', this.#onError)
    process.on('unhandledRejection', this.#onRejection)
  }

  stop (): void {
    process.off('uncaughtException', this.#onError)
    process.off('unhandledRejection', this.#onRejection)
  }
}

export function describe (err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message.slice(0, 300)}\n${err.stack?.split('\n').slice(1, 6).join('\n') ?? ''}` : String(err).slice(0, 300)
}

let gcFn: (() => void) | undefined

/** The heap in use after a full collection. */
export async function settledHeap (): Promise<number> {
  if (gcFn == null) {
    setFlagsFromString('--expose-gc')
    gcFn = runInNewContext('gc') as () => void
  }
  for (let i = 0; i < 3; i++) {
    gcFn()
    await new Promise(resolve => setImmediate(resolve))
  }
  return process.memoryUsage().heapUsed
}

/** Heap growth a fuzz file may show from start to end: caches and JIT, not leaked inputs. */
export const HEAP_GROWTH_LIMIT = 96 * 1024 * 1024
