import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { parsePort, requireArg } from '../../node/cli/args.ts'
import { UsageError } from '../../node/cli/errors.ts'
import { runService } from '../../node/cli/service.ts'
import { Coordinator, type CoordinatorInit } from '../coordinator.ts'

/** `gatemesh coordinator`: run until SIGINT/SIGTERM. */
export async function coordinatorCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      data: { type: 'string' },
      fleet: { type: 'string' },
      port: { type: 'string' },
      'grpc-port': { type: 'string' },
      'no-grpc': { type: 'boolean' },
      host: { type: 'string' },
      'p2p-listen': { type: 'string', multiple: true },
      announce: { type: 'string', multiple: true },
      bootstrap: { type: 'string', multiple: true },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'max-upload-mb': { type: 'string' }
    }
  })
  if ((values['tls-cert'] == null) !== (values['tls-key'] == null)) throw new UsageError('--tls-cert and --tls-key go together')
  const port = parsePort(values.port, '--port')
  const grpcPort = values['no-grpc'] === true ? false : parsePort(values['grpc-port'], '--grpc-port')
  const uploadMb = values['max-upload-mb'] == null ? undefined : Number(values['max-upload-mb'])
  if (uploadMb != null && !(Number.isInteger(uploadMb) && uploadMb >= 1 && uploadMb <= 65536)) throw new UsageError(`--max-upload-mb: "${values['max-upload-mb']}" must be a whole number of MiB from 1 to 65536`)
  const init: CoordinatorInit = {
    dataDir: resolve(requireArg(values.data, '--data DIR')),
    fleetDir: resolve(requireArg(values.fleet, '--fleet FLEETDIR')),
    ...(port == null ? {} : { port }),
    ...(grpcPort == null ? {} : { grpcPort }),
    ...(values.host == null ? {} : { host: values.host }),
    ...(values['p2p-listen'] == null ? {} : { listen: values['p2p-listen'] }),
    ...(values.announce == null ? {} : { announce: values.announce }),
    ...(values.bootstrap == null ? {} : { bootstrap: values.bootstrap }),
    ...(values['tls-cert'] == null || values['tls-key'] == null ? {} : { tls: { certFile: resolve(values['tls-cert']), keyFile: resolve(values['tls-key']) } }),
    ...(uploadMb == null ? {} : { models: { maxUploadBytes: uploadMb * 1024 * 1024 } })
  }
  const coordinator = await Coordinator.create(init)
  const started = await runService(coordinator, coordinator.agent.logger.child({ service: 'coordinator' }))
  if (started.firstAdmin != null) {
    // printed once, on purpose not through the logger: it must not land in any log file
    process.stdout.write(`\ngatemesh coordinator: created the first user "${started.firstAdmin.username}" with password\n\n    ${started.firstAdmin.password}\n\n` +
      'It is shown only this once. Change it after logging in, or reset it with\n' +
      `gatemesh user password --data ${init.dataDir} --username ${started.firstAdmin.username} (coordinator stopped).\n\n`)
  }
  process.stdout.write(`gatemesh coordinator ${coordinator.peerId} listening on ${started.url} (dashboard /, API /api/v1, OpenAPI /docs)${started.grpc == null ? '' : `, gRPC ${started.grpc}`}\n`)
}
