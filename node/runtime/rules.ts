import jsep from 'jsep'
import { InstanceSpecError } from './errors.ts'

/**
 * Rule conditions: small expressions over a prediction, e.g.
 * `class == "anomaly" && score > 0.9` or `value > 30 || reading.value < -5`.
 * Parsed once by jsep into a tree and evaluated by walking it — never by
 * `eval` or `new Function` — over literals, names, member access (own
 * properties only), comparison, arithmetic, `!`, `&&`, `||` and `? :`.
 * Calls, assignments and `this` are refused at compile time.
 */

type Node = jsep.Expression
export type Condition = (context: Record<string, unknown>) => boolean

const BINARY = new Set(['==', '!=', '===', '!==', '<', '<=', '>', '>=', '+', '-', '*', '/', '%', '&&', '||'])
const UNARY = new Set(['!', '-', '+'])

/** Compile a condition; a bad one is an InstanceSpecError naming `field`. */
export function compileCondition (expression: string, field: string): Condition {
  let ast: Node
  try {
    ast = jsep(expression)
  } catch (err: any) {
    throw new InstanceSpecError(`${field}: cannot parse condition: ${err.message}`, field, { cause: err })
  }
  check(ast, field)
  return context => truthy(evaluate(ast, context))
}

function check (node: Node, field: string): void {
  switch (node.type) {
    case 'Literal':
    case 'Identifier':
      return
    case 'MemberExpression':
      check(node.object as Node, field)
      if (node.computed === true) check(node.property as Node, field)
      else if ((node.property as Node).type !== 'Identifier') throw refuse('member name', field)
      return
    case 'UnaryExpression':
      if (!UNARY.has(node.operator as string)) throw refuse(`operator ${String(node.operator)}`, field)
      check(node.argument as Node, field)
      return
    case 'BinaryExpression':
      if (!BINARY.has(node.operator as string)) throw refuse(`operator ${String(node.operator)}`, field)
      check(node.left as Node, field)
      check(node.right as Node, field)
      return
    case 'ConditionalExpression':
      check(node.test as Node, field)
      check(node.consequent as Node, field)
      check(node.alternate as Node, field)
      return
    default:
      throw refuse(node.type === 'CallExpression' ? 'function calls' : node.type === 'Compound' ? 'several expressions' : node.type, field)
  }
}

function refuse (what: string, field: string): InstanceSpecError {
  return new InstanceSpecError(`${field}: ${what} not allowed in a condition`, field)
}

function own (obj: unknown, key: unknown): unknown {
  if (obj == null || (typeof obj !== 'object' && typeof obj !== 'string')) return undefined
  const k = typeof key === 'number' ? key : String(key)
  if (typeof obj === 'string') return k === 'length' ? obj.length : undefined
  if (Array.isArray(obj) && k === 'length') return obj.length
  return Object.hasOwn(obj, k) ? (obj as Record<string | number, unknown>)[k] : undefined
}

function evaluate (node: Node, ctx: Record<string, unknown>): unknown {
  switch (node.type) {
    case 'Literal':
      return node.value
    case 'Identifier':
      return own(ctx, node.name)
    case 'MemberExpression': {
      const obj = evaluate(node.object as Node, ctx)
      const key = node.computed === true ? evaluate(node.property as Node, ctx) : (node.property as Node).name
      return own(obj, key)
    }
    case 'UnaryExpression': {
      const v = evaluate(node.argument as Node, ctx)
      return node.operator === '!' ? !truthy(v) : node.operator === '-' ? -num(v) : num(v)
    }
    case 'ConditionalExpression':
      return truthy(evaluate(node.test as Node, ctx)) ? evaluate(node.consequent as Node, ctx) : evaluate(node.alternate as Node, ctx)
    case 'BinaryExpression': {
      const op = node.operator as string
      if (op === '&&') return truthy(evaluate(node.left as Node, ctx)) && truthy(evaluate(node.right as Node, ctx))
      if (op === '||') return truthy(evaluate(node.left as Node, ctx)) || truthy(evaluate(node.right as Node, ctx))
      const a = evaluate(node.left as Node, ctx)
      const b = evaluate(node.right as Node, ctx)
      switch (op) {
        // null and a missing value are the same thing to a rule author
        case '==': case '===': return a === b || (a == null && b == null)
        case '!=': case '!==': return !(a === b || (a == null && b == null))
        // a missing value compares false rather than as NaN arithmetic surprises
        case '<': return comparable(a, b) && (a as number) < (b as number)
        case '<=': return comparable(a, b) && (a as number) <= (b as number)
        case '>': return comparable(a, b) && (a as number) > (b as number)
        case '>=': return comparable(a, b) && (a as number) >= (b as number)
        case '+': return typeof a === 'string' || typeof b === 'string' ? String(a) + String(b) : num(a) + num(b)
        case '-': return num(a) - num(b)
        case '*': return num(a) * num(b)
        case '/': return num(a) / num(b)
        case '%': return num(a) % num(b)
      }
    }
  }
  return undefined
}

function comparable (a: unknown, b: unknown): boolean {
  return (typeof a === 'number' && typeof b === 'number') || (typeof a === 'string' && typeof b === 'string')
}

function num (v: unknown): number {
  return typeof v === 'number' ? v : typeof v === 'boolean' ? Number(v) : NaN
}

function truthy (v: unknown): boolean {
  return v === true || (typeof v === 'number' && v !== 0 && !Number.isNaN(v)) || (typeof v === 'string' && v !== '')
}

export interface RuleInit {
  name: string
  when: string
  /** after firing, stay quiet this long. @default 0 */
  cooldownMs?: number
  /** fire only after this many consecutive matching predictions. @default 1 */
  debounce?: number
}

/** A condition with cooldown and debounce state. */
export class Rule {
  readonly name: string
  readonly when: string
  readonly #condition: Condition
  readonly #cooldownMs: number
  readonly #debounce: number
  #streak = 0
  #lastFired = -Infinity
  #fired = 0

  constructor (init: RuleInit, field: string) {
    this.name = init.name
    this.when = init.when
    this.#condition = compileCondition(init.when, `${field}.when`)
    this.#cooldownMs = init.cooldownMs ?? 0
    this.#debounce = init.debounce ?? 1
  }

  get fired (): number {
    return this.#fired
  }

  /**
   * Feed one prediction; true when the rule fires for it. `now` is in
   * milliseconds of the monotonic clock: the cooldown is a span of time,
   * and the wall clock can step back (NTP, a clock fixed by hand), which
   * made `now - lastFired` negative and kept every rule on the node quiet —
   * even one without a cooldown — until the wall clock caught up again
   * (a 5-minute step lost every notification of that node for 5 minutes).
   */
  test (context: Record<string, unknown>, now = performance.now()): boolean {
    if (!this.#condition(context)) {
      this.#streak = 0
      return false
    }
    this.#streak++
    if (this.#streak < this.#debounce) return false
    if (this.#cooldownMs > 0 && now - this.#lastFired < this.#cooldownMs) return false
    this.#lastFired = now
    this.#streak = 0
    this.#fired++
    return true
  }
}
