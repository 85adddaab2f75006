import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { requireArg } from './args.ts'

export const RUN_USAGE = 'gatemesh run BUNDLE.zip [--api URL | --data DIR] [--token-file FILE] [--sensor ID ...] [--name NAME]'
export const STOP_USAGE = 'gatemesh stop NAME [--api URL | --data DIR] [--token-file FILE]'

async function call<T> (client: AgentClient, method: string, path: string, body: Buffer | object | undefined, timeoutMs: number): Promise<T> {
  const init = Buffer.isBuffer(body) ? { body, headers: { 'content-type': 'application/zip' } } : body === undefined ? {} : { json: body }
  return (await client.request<T>(method, path, { ...init, timeoutMs })).body
}

/** Upload a bundle to an agent and start an instance of it there. */
export async function runCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...AGENT_OPTIONS, sensor: { type: 'string', multiple: true }, name: { type: 'string' } }
  })
  const path = resolve(requireArg(positionals[0], 'BUNDLE.zip'))
  const client = await AgentClient.from(values)
  const zip = await readFile(path)
  const uploaded = await call<{ digest: string, name: string, version: string }>(client, 'POST', '/v1/bundles', zip, 300_000)
  const instance = await call<{ name: string, version: string, backend: string, sensors: string[] }>(client, 'POST', '/v1/instances', {
    bundle: uploaded.digest,
    ...(values.name == null ? {} : { name: values.name }),
    ...(values.sensor == null ? {} : { sensors: values.sensor })
  }, 120_000)
  console.log(`${instance.name} ${instance.version} running (backend ${instance.backend}${instance.sensors.length > 0 ? `, sensors ${instance.sensors.join(', ')}` : ''})`)
  console.log(`bundle ${uploaded.digest}`)
  console.log(`predict: POST ${new URL(`/v1/models/${instance.name}:predict`, client.api).toString()}`)
}

/** Stop an instance on an agent. */
export async function stopCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: AGENT_OPTIONS })
  const name = requireArg(positionals[0], 'NAME')
  const client = await AgentClient.from(values)
  await call(client, 'DELETE', `/v1/instances/${encodeURIComponent(name)}`, undefined, 30_000)
  console.log(`${name} stopped`)
}
