import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Agent } from '../agent.ts'
import { firstBoot } from '../identity/first-boot.ts'
import { requireArg } from './args.ts'
import { runService } from './service.ts'

export const AGENT_USAGE = 'gatemesh agent --data DIR'

/** Run an agent until SIGINT/SIGTERM. */
export async function agentCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' } } })
  const dir = resolve(requireArg(values.data, '--data DIR'))
  if (!await enrollFirst(dir)) return
  const agent = await Agent.create(dir)
  await runService(agent, agent.logger.child({ service: 'agent' }))
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
