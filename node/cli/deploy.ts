import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { deploymentKey } from '../scheduler/keys.ts'
import { parseDeploymentSpec } from '../scheduler/spec.ts'
import { readPrivateKey, type Signer } from '../../packaging/trust.ts'
import { requireArg } from './args.ts'
import { authorizeThrough } from './fleet-write.ts'
import { UsageError } from './errors.ts'
import { resolveApi } from './status.ts'
import { table } from './table.ts'
import type { DeploymentStatus } from '../scheduler/status.ts'

export const DEPLOY_USAGE = 'gatemesh deploy SPEC.json --key KEY [--publisher-cert CERT] [--api URL]'
export const UNDEPLOY_USAGE = 'gatemesh undeploy ID ... --key KEY [--publisher-cert CERT] [--api URL]'
export const DEPLOYMENTS_USAGE = 'gatemesh deployments [--api URL] [--json]'
export const CONTROL_USAGE = 'gatemesh drain|undrain [--api URL] · gatemesh evict|unevict DEPLOYMENT [--api URL]'

export async function signer (values: { key?: string | undefined, 'publisher-cert'?: string | undefined }): Promise<Signer> {
  const key = await readPrivateKey(requireArg(values.key, '--key KEY (the fleet key, or a publisher key with --publisher-cert)'))
  if (values['publisher-cert'] == null) return { key }
  return { key, publisherCert: (await readFile(values['publisher-cert'], 'utf8')).trim() }
}

export async function call (api: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(new URL(path, api), {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000)
  })
  const json = await res.json().catch(() => ({})) as { message?: string }
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${json.message ?? ''}`.trim())
  return json
}

const options = {
  api: { type: 'string' },
  data: { type: 'string' },
  key: { type: 'string' },
  'publisher-cert': { type: 'string' },
  json: { type: 'boolean' }
} as const

/** Sign a deployment spec with the fleet (or a publisher) key and hand it to any agent. */
export async function deployCommand (argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  const file = requireArg(positionals[0], 'SPEC.json')
  let spec: unknown
  try {
    spec = JSON.parse(await readFile(file, 'utf8'))
  } catch (err: any) {
    throw new UsageError(`${file}: ${err.message}`)
  }
  const parsed = parseDeploymentSpec(spec)
  const s = await signer(values)
  const api = await resolveApi(values)
  // the authorisation binds the entry this agent will write: key, value, writer and timestamp
  const auth = await authorizeThrough(async (m, p, b) => await call(api, m, p, b), deploymentKey(parsed.id), JSON.stringify(spec), s)
  await call(api, 'PUT', `/v1/deployments/${parsed.id}`, { spec, auth })
  console.log(`deployment ${parsed.id} written through ${api}`)
}

export async function undeployCommand (argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  if (positionals.length === 0) throw new UsageError('missing deployment id')
  const s = await signer(values)
  const api = await resolveApi(values)
  for (const id of positionals) {
    const auth = await authorizeThrough(async (m, p, b) => await call(api, m, p, b), deploymentKey(id), null, s)
    await call(api, 'DELETE', `/v1/deployments/${id}`, { auth })
    console.log(`deployment ${id} removed`)
  }
}

export async function deploymentsCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options })
  const api = await resolveApi(values)
  const [{ deployments }, scheduler] = await Promise.all([call(api, 'GET', '/v1/deployments') as Promise<{ deployments: DeploymentStatus[] }>, call(api, 'GET', '/v1/scheduler')])
  if (values.json === true) {
    console.log(JSON.stringify({ scheduler, deployments }, null, 2))
    return
  }
  const short = (id: string): string => `…${id.slice(-8)}`
  console.log(table(['DEPLOYMENT', 'MODEL', 'REPLICAS', 'RUNNING', 'WINDOW', 'NODES'], deployments.map(d => [
    d.id,
    `${d.spec.model.name}@${d.spec.model.version ?? d.spec.model.digest?.slice(0, 12) ?? '?'}`,
    String(d.placement?.replicas ?? d.spec.replicas),
    String(d.running),
    d.window.active ? (d.window.nextChange == null ? 'always' : `until ${d.window.nextChange}`) : (d.window.nextChange == null ? 'ended' : `from ${d.window.nextChange}`),
    d.instances.map(i => `${short(i.node)}:${i.state}`).join(' ')
  ])))
  console.log(`scheduler ${scheduler.leader == null ? 'none' : short(scheduler.leader)} (zone ${scheduler.zone}, term ${scheduler.term ?? '-'})`)
}

/** drain | undrain | evict ID | unevict ID on one agent. */
export async function controlCommand (verb: 'drain' | 'undrain' | 'evict' | 'unevict', argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  const api = await resolveApi(values)
  let state
  if (verb === 'drain' || verb === 'undrain') state = await call(api, 'POST', `/v1/${verb}`)
  else {
    const id = requireArg(positionals[0], 'deployment id')
    state = await call(api, verb === 'evict' ? 'POST' : 'DELETE', `/v1/deployments/${id}/evict`)
  }
  console.log(`${state.node}: ${state.drained === true ? 'drained' : 'accepting work'}${state.excluded.length > 0 ? `; evicted: ${state.excluded.join(', ')}` : ''}`)
}
