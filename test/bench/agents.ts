import { AGENT_NODE_FLAGS, buildAppBundle } from '../../packaging/app-bundle.ts'
import { AGENT_ENVIRONMENT } from '../../packaging/image/layout.ts'
import type { Cluster } from '../helpers/cluster.ts'

/**
 * How benchmarks start agents: as images ship them (the app bundle, the
 * unit's node flags and environment), or from sources with `--sources`.
 * Undefined means the Cluster default (sources).
 */
export async function agentCommand (fromSources: boolean, log: (msg: string) => void): Promise<Cluster['command'] | undefined> {
  if (fromSources) return undefined
  const bundle = await buildAppBundle()
  log(`agent bundle ${(bundle.bytes / 1048576).toFixed(1)} MB at ${bundle.file}`)
  return { exec: process.execPath, args: [...AGENT_NODE_FLAGS, bundle.file], env: AGENT_ENVIRONMENT }
}
