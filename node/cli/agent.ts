import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Agent } from '../agent.ts'
import { firstBoot } from '../identity/first-boot.ts'
import { requireArg } from './args.ts'

export const AGENT_USAGE = 'gatemesh agent --data DIR'

/** Run an agent until SIGINT/SIGTERM. */
export async function agentCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' } } })
  const dir = resolve(requireArg(values.data, '--data DIR'))
  if (!await enrollFirst(dir)) return
  const agent = await Agent.create(dir)
  const log = agent.logger.child({ service: 'agent' })
  // a bug in one handler must not take the gateway down; systemd would only restart us into the same state
  process.on('unhandledRejection', err => { log.error({ err }, 'unhandled rejection') })
  process.on('uncaughtException', err => { log.error({ err }, 'uncaught exception') })
  let stopping = false
  const shutdown = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down')
    const force = setTimeout(() => process.exit(1), 10_000)
    force.unref()
    agent.stop().then(() => process.exit(0), err => {
      log.error({ err }, 'stop failed')
      process.exit(1)
    })
  }
  process.on('SIGINT', () => { shutdown('SIGINT') })
  process.on('SIGTERM', () => { shutdown('SIGTERM') })
  try {
    await agent.start()
  } catch (err) {
    // half-started: libp2p may be listening already; close what is open before exiting
    await agent.stop().catch(() => {})
    throw err
  }
}

/**
 * A node directory from an image built with an enrollment token enrolls on
 * first boot, waiting for the coordinator as long as it takes; SIGTERM or
 * SIGINT during the wait ends the process cleanly (false).
 */
async function enrollFirst (dir: string): Promise<boolean> {
  const stop = new AbortController()
  const onSignal = (): void => { stop.abort() }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    return await firstBoot(dir, { signal: stop.signal })
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
