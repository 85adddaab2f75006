import { installCrashGuard } from './crash-guard.ts'
import type { Logger } from 'pino'

/**
 * Run a long-lived service (agent, coordinator) until SIGINT/SIGTERM: log
 * stray errors instead of dying — a bug in one handler must not take a
 * gateway down, systemd would only restart it into the same state, and
 * no library's own process error listener may undo that (crash-guard.ts) — stop
 * cleanly on a signal, and close what a failed start left open.
 */
export async function runService<T> (service: { start(): Promise<T>, stop(): Promise<void> }, log: Logger): Promise<T> {
  installCrashGuard(log)
  let stopping = false
  const shutdown = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down')
    const force = setTimeout(() => process.exit(1), 10_000)
    force.unref()
    service.stop().then(() => process.exit(0), err => {
      log.error({ err }, 'stop failed')
      process.exit(1)
    })
  }
  process.on('SIGINT', () => { shutdown('SIGINT') })
  process.on('SIGTERM', () => { shutdown('SIGTERM') })
  try {
    return await service.start()
  } catch (err) {
    // half-started: libp2p may be listening already
    await service.stop().catch(() => {})
    throw err
  }
}
