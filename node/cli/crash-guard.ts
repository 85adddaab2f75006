import type { Logger } from 'pino'

/**
 * The process-level error events a long-lived service must survive. Node
 * calls every listener of `uncaughtException` in turn, and an exception
 * thrown by one of them ends the process at once — whatever the other
 * listeners would have done.
 */
const GUARDED = new Set<string | symbol>(['uncaughtException', 'unhandledRejection'])

type Listener = (...args: any[]) => void

let installed: { log: Pick<Logger, 'error' | 'warn'>, ours: Set<Listener> } | undefined

/**
 * Log stray errors instead of dying, and keep it that way once libraries
 * load. Emscripten modules — TensorFlow.js's wasm backend among them —
 * install `process.on('uncaughtException', ex => { throw ex })` and
 * `process.on('unhandledRejection', r => { throw r })` when they start,
 * which turns every stray error after that into a crash; their dispose
 * then removes *every* listener, ours included (a precedence bug in their
 * filter). So from here on:
 *
 * - a listener anyone else adds for these events runs inside a try/catch:
 *   whatever it throws is logged, never rethrown into Node;
 * - our own listeners cannot be removed (`off`, `removeListener`,
 *   `removeAllListeners` leave them in place).
 *
 * Called once, at the start of `runService`, before any module that
 * could add such a listener is loaded. Idempotent.
 */
export function installCrashGuard (log: Pick<Logger, 'error' | 'warn'>): void {
  if (installed != null) {
    installed.log = log
    return
  }
  const state = { log, ours: new Set<Listener>() }
  installed = state
  const onException: Listener = (err: unknown) => { state.log.error({ err }, 'uncaught exception') }
  const onRejection: Listener = (reason: unknown) => { state.log.error({ err: reason }, 'unhandled rejection') }
  state.ours.add(onException)
  state.ours.add(onRejection)
  process.on('uncaughtException', onException)
  process.on('unhandledRejection', onRejection)

  // foreign listener → the wrapper registered in its place, so that removing it still works
  const wrappers = new WeakMap<Listener, Listener>()
  const guard = (event: string | symbol, listener: Listener): Listener => {
    let wrapped = wrappers.get(listener)
    if (wrapped == null) {
      wrapped = function (this: unknown, ...args: unknown[]) {
        try {
          listener.apply(this, args)
        } catch (err) {
          // most such listeners rethrow the error they were given, which ours has logged already
          if (err !== args[0]) state.log.error({ err, event: String(event) }, 'a process error listener threw; the process keeps running')
        }
      }
      wrappers.set(listener, wrapped)
    }
    return wrapped
  }

  const proc = process as unknown as Record<string, (...args: any[]) => unknown>
  for (const method of ['on', 'addListener', 'prependListener', 'once', 'prependOnceListener']) {
    const original = proc[method]!
    proc[method] = function (this: unknown, event: string | symbol, listener: Listener) {
      if (!GUARDED.has(event) || state.ours.has(listener) || typeof listener !== 'function') return original.call(this, event, listener)
      state.log.warn({ event: String(event), listener: listener.name === '' ? '(anonymous)' : listener.name }, 'a module added a process error listener; it is kept from ending the process')
      return original.call(this, event, guard(event, listener))
    }
  }
  for (const method of ['off', 'removeListener']) {
    const original = proc[method]!
    proc[method] = function (this: unknown, event: string | symbol, listener: Listener) {
      if (!GUARDED.has(event)) return original.call(this, event, listener)
      if (state.ours.has(listener)) return process
      return original.call(this, event, wrappers.get(listener) ?? listener)
    }
  }
  const removeAll = proc.removeAllListeners!
  proc.removeAllListeners = function (this: unknown, ...args: Array<string | symbol>) {
    const [event] = args
    if (args.length === 0) {
      // everything else goes; our two stay
      for (const name of process.eventNames()) if (!GUARDED.has(name)) removeAll.call(this, name)
      for (const name of GUARDED) for (const l of process.listeners(name as 'uncaughtException')) if (!state.ours.has(l)) process.removeListener(name as 'uncaughtException', l)
      return process
    }
    if (event == null || !GUARDED.has(event)) return removeAll.apply(this, args)
    for (const l of process.listeners(event as 'uncaughtException')) if (!state.ours.has(l)) process.removeListener(event as 'uncaughtException', l)
    return process
  }
}
