import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Agent } from '../agent.ts'
import { requireArg } from './args.ts'
import { runService } from './service.ts'

export const AGENT_USAGE = 'gatemesh agent --data DIR'

/** Run an agent until SIGINT/SIGTERM. */
export async function agentCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { data: { type: 'string' } } })
  const agent = await Agent.create(resolve(requireArg(values.data, '--data DIR')))
  await runService(agent, agent.logger.child({ service: 'agent' }))
}
