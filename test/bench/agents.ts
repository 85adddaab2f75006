import { bundleCommand, type AppCommand } from '../helpers/app-bundle.ts'
import { SOURCES_COMMAND } from '../helpers/cluster.ts'

/**
 * How benchmarks start agents: as images ship them (the app bundle, the
 * unit's node flags and environment; built once per source state and
 * shared with the tests), or from sources with `--sources`.
 */
export async function agentCommand (fromSources: boolean, log: (msg: string) => void): Promise<AppCommand> {
  if (fromSources) return SOURCES_COMMAND
  const command = await bundleCommand()
  log(`agent bundle at ${command.args.at(-1)!}`)
  return command
}
