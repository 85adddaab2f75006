import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ConfigError, parseConfig } from '../config/config.ts'
import { checkJoinToken, coordinatorUrl, enrollNodeDir } from '../identity/enroll.ts'
import { AlreadyInitializedError } from '../identity/errors.ts'
import { exists } from '../identity/files.ts'
import { NODE_FILES } from '../identity/node-dir.ts'
import { parseLabels, parsePort, requireArg } from './args.ts'

export { EnrollmentFailedError } from '../identity/enroll.ts'

export const ENROLL_USAGE = 'gatemesh enroll --coordinator URL --token T --data DIR [--role gateway|server] [--labels k=v,...] [--listen MULTIADDR ...] [--api-port N] [--insecure]'

/** `gatemesh enroll`: trade a one-time join token for a ready-to-run node directory. */
export async function enrollCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      coordinator: { type: 'string' },
      token: { type: 'string' },
      data: { type: 'string' },
      role: { type: 'string' },
      labels: { type: 'string' },
      listen: { type: 'string', multiple: true },
      'api-port': { type: 'string' },
      insecure: { type: 'boolean' }
    }
  })
  const url = coordinatorUrl(requireArg(values.coordinator, '--coordinator URL'), values.insecure === true)
  const token = requireArg(values.token, '--token T')
  checkJoinToken(token)
  const dir = resolve(requireArg(values.data, '--data DIR'))
  const role = values.role ?? 'gateway'
  if (role !== 'gateway' && role !== 'server') throw new ConfigError(`config.role: "${role}" must be gateway or server`, 'config.role')
  const labels = parseLabels(values.labels)
  const apiPort = parsePort(values['api-port'], '--api-port')
  const config = {
    role,
    labels,
    listen: values.listen ?? ['/ip4/0.0.0.0/tcp/7400'],
    bootstrap: [] as string[],
    api: { host: '127.0.0.1', port: apiPort ?? 7401 }
  }
  // every flag is checked before anything is written or sent
  parseConfig(config)
  if (await exists(join(dir, NODE_FILES.certificate))) throw new AlreadyInitializedError(`${dir} already holds a node`)
  const enrolled = await enrollNodeDir(dir, { coordinator: url, token, role, labels, config })
  console.log(`enrolled ${enrolled.peerId} as ${enrolled.role} in fleet ${enrolled.fleetId}; bootstrap ${enrolled.bootstrap.join(' ') || '(none)'}`)
  console.log(`start it with: gatemesh agent --data ${dir}`)
}
