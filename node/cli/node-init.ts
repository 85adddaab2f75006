import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ROLES, type Role } from '../identity/certificate.ts'
import { initNodeDir } from '../identity/node-dir.ts'
import { ConfigError } from '../config/config.ts'
import { parseLabels, parsePort, requireArg } from './args.ts'
import { UsageError } from './errors.ts'

export const NODE_INIT_USAGE = 'gatemesh node init DIR --fleet FLEETDIR --role gateway|server [--labels k=v,...] [--listen MULTIADDR ...] [--api-port N] [--bootstrap MULTIADDR ...] [--valid-days N]'

export async function nodeCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      fleet: { type: 'string' },
      role: { type: 'string' },
      labels: { type: 'string' },
      listen: { type: 'string', multiple: true },
      'api-port': { type: 'string' },
      'api-host': { type: 'string' },
      bootstrap: { type: 'string', multiple: true },
      'valid-days': { type: 'string' }
    }
  })
  const [sub, dir] = positionals
  if (sub !== 'init') throw new UsageError(`usage: ${NODE_INIT_USAGE}`)
  const role = requireArg(values.role, '--role')
  if (!(ROLES as readonly string[]).includes(role)) throw new ConfigError(`config.role: "${role}" must be one of ${ROLES.join(', ')}`, 'config.role')
  const validDays = values['valid-days'] == null ? undefined : Number(values['valid-days'])
  if (validDays != null && !(validDays > 0)) throw new UsageError(`--valid-days: "${values['valid-days']}" is not a positive number`)
  const apiPort = parsePort(values['api-port'], '--api-port')
  const { peerId } = await initNodeDir(resolve(requireArg(dir, 'node directory')), {
    fleetDir: resolve(requireArg(values.fleet, '--fleet')),
    role: role as Role,
    labels: parseLabels(values.labels),
    ...(values.listen == null ? {} : { listen: values.listen }),
    ...(values.bootstrap == null ? {} : { bootstrap: values.bootstrap }),
    ...(apiPort == null ? {} : { apiPort }),
    ...(values['api-host'] == null ? {} : { apiHost: values['api-host'] }),
    ...(validDays == null ? {} : { validDays })
  })
  console.log(`node ${peerId} (${role}) ready in ${resolve(dir!)}`)
  console.log(`start it with: gatemesh agent --data ${resolve(dir!)}`)
}
