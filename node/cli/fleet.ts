import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { initFleet, initPublisher } from '../identity/fleet.ts'
import { requireArg } from './args.ts'
import { UsageError } from './errors.ts'

export const FLEET_USAGE = `gatemesh fleet init DIR
       gatemesh fleet publisher FLEETDIR NAME --out DIR [--valid-days N]`

export async function fleetCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { out: { type: 'string' }, 'valid-days': { type: 'string' } } })
  const [sub, dir] = positionals
  if (sub === 'publisher') {
    const validDays = values['valid-days'] == null ? undefined : Number(values['valid-days'])
    if (validDays != null && !(validDays > 0)) throw new UsageError(`--valid-days: "${values['valid-days']}" is not a positive number`)
    const out = resolve(requireArg(values.out, '--out DIR'))
    const name = requireArg(positionals[2], 'publisher NAME')
    await initPublisher(resolve(requireArg(dir, 'fleet directory')), name, out, validDays)
    console.log(`publisher ${name} certified by the fleet in ${out}`)
    console.log('  publisher.key   publisher signing key (keep secret; mode 0600)')
    console.log('  publisher.cert  its fleet-signed certificate: gatemesh bundle build --key publisher.key --cert publisher.cert')
    return
  }
  if (sub !== 'init') throw new UsageError(`usage: ${FLEET_USAGE}`)
  const info = await initFleet(resolve(requireArg(dir, 'fleet directory')))
  console.log(`fleet ${info.fleetId} created in ${info.dir}`)
  console.log('  fleet.key    fleet signing key (keep secret; mode 0600)')
  console.log('  fleet.pub    fleet public key (every node holds a copy)')
  console.log('  network.key  private-network key (mode 0600)')
}
