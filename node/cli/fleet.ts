import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { initFleet } from '../identity/fleet.ts'
import { requireArg } from './args.ts'
import { UsageError } from './errors.ts'

export const FLEET_USAGE = 'gatemesh fleet init DIR'

export async function fleetCommand (argv: string[]): Promise<void> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} })
  const [sub, dir] = positionals
  if (sub !== 'init') throw new UsageError(`usage: ${FLEET_USAGE}`)
  const info = await initFleet(resolve(requireArg(dir, 'fleet directory')))
  console.log(`fleet ${info.fleetId} created in ${info.dir}`)
  console.log('  fleet.key    fleet signing key (keep secret; mode 0600)')
  console.log('  fleet.pub    fleet public key (every node holds a copy)')
  console.log('  network.key  private-network key (mode 0600)')
}
