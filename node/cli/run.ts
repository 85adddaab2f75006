import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { requireArg } from './args.ts'
import { ApiError } from './errors.ts'
import { resolveApi } from './status.ts'

export const RUN_USAGE = 'gatemesh run BUNDLE.zip [--api URL | --data DIR] [--sensor ID ...] [--name NAME]'
export const STOP_USAGE = 'gatemesh stop NAME [--api URL | --data DIR]'

async function call<T> (api: string, method: string, path: string, body: Buffer | object | undefined, timeoutMs: number): Promise<T> {
  const isZip = Buffer.isBuffer(body)
  const res = await fetch(new URL(path, api), {
    method,
    headers: body === undefined ? {} : { 'content-type': isZip ? 'application/zip' : 'application/json' },
    body: body === undefined ? undefined : isZip ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs)
  })
  const answer = await res.json().catch(() => ({})) as Record<string, unknown>
  if (!res.ok) throw new ApiError(res.status, answer as { code?: string, message?: string })
  return answer as T
}

/** Upload a bundle to an agent and start an instance of it there. */
export async function runCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { api: { type: 'string' }, data: { type: 'string' }, sensor: { type: 'string', multiple: true }, name: { type: 'string' } }
  })
  const path = resolve(requireArg(positionals[0], 'BUNDLE.zip'))
  const api = await resolveApi(values)
  const zip = await readFile(path)
  const uploaded = await call<{ digest: string, name: string, version: string }>(api, 'POST', '/v1/bundles', zip, 300_000)
  const instance = await call<{ name: string, version: string, backend: string, sensors: string[] }>(api, 'POST', '/v1/instances', {
    bundle: uploaded.digest,
    ...(values.name == null ? {} : { name: values.name }),
    ...(values.sensor == null ? {} : { sensors: values.sensor })
  }, 120_000)
  console.log(`${instance.name} ${instance.version} running (backend ${instance.backend}${instance.sensors.length > 0 ? `, sensors ${instance.sensors.join(', ')}` : ''})`)
  console.log(`bundle ${uploaded.digest}`)
  console.log(`predict: POST ${new URL(`/v1/models/${instance.name}:predict`, api).toString()}`)
}

/** Stop an instance on an agent. */
export async function stopCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { api: { type: 'string' }, data: { type: 'string' } } })
  const name = requireArg(positionals[0], 'NAME')
  const api = await resolveApi(values)
  await call(api, 'DELETE', `/v1/instances/${encodeURIComponent(name)}`, undefined, 30_000)
  console.log(`${name} stopped`)
}
