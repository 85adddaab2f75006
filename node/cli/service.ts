import { installCrashGuard } from './crash-guard.ts'
import type { Logger } from 'pino'

/**
 * Run a long-lived service (agent, coordinator) until SIGINT/SIGTERM: log
 * stray errors instead of dying — a bug in one handler must not take a
 * gateway down, systemd would only restart it into the same state, and
 * no library's own process error listener may undo that (crash-guard.ts) — stop
 * cleanly on a signal or when the service asks to exit with a status of
 * its own, and close what a failed start left open.
 */
export async function runService<T> (service: { start(): Promise<T>, stop(): Promise<void>, onExitRequest?: (exit: (code: number, reason: string) => void) => void }, log: Logger): Promise<T> {
  installCrashGuard(log)
  let stopping = false
  const shutdown = (signal: string, code = 0): void => {
    if (stopping) return
    stopping = true
    log.info({ signal, code }, 'shutting down')
    const force = setTimeout(() => process.exit(code === 0 ? 1 : code), 10_000)
    force.unref()
    service.stop().then(() => process.exit(code), err => {
      log.error({ err }, 'stop failed')
      process.exit(1)
    })
  }
  process.on('SIGINT', () => { shutdown('SIGINT') })
  process.on('SIGTERM', () => { shutdown('SIGTERM') })
  // the service asks to end with a status of its own (an agent restarting into a new release)
  service.onExitRequest?.((code, reason) => { shutdown(reason, code) })
  try {
    return await service.start()
  } catch (err) {
    // half-started: libp2p may be listening already
    await service.stop().catch(() => {})
    throw err
  }
}
