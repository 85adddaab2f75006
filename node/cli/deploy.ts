import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { deploymentKey } from '../scheduler/keys.ts'
import { parseDeploymentSpec } from '../scheduler/spec.ts'
import { readPrivateKey, type Signer } from '../../packaging/trust.ts'
import { requireArg } from './args.ts'
import { authorizeThrough } from './fleet-write.ts'
import { UsageError } from './errors.ts'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { table } from './table.ts'
import type { DeploymentStatus } from '../scheduler/status.ts'

const TARGET = '[--api URL | --data DIR] [--token-file FILE]'
export const DEPLOY_USAGE = `gatemesh deploy SPEC.json --key KEY [--publisher-cert CERT] ${TARGET}`
export const UNDEPLOY_USAGE = `gatemesh undeploy ID ... --key KEY [--publisher-cert CERT] ${TARGET}`
export const DEPLOYMENTS_USAGE = `gatemesh deployments ${TARGET} [--json]`
export const CONTROL_USAGE = `gatemesh drain|undrain ${TARGET} · gatemesh evict|unevict DEPLOYMENT ${TARGET}`

export async function signer (values: { key?: string | undefined, 'publisher-cert'?: string | undefined }): Promise<Signer> {
  const key = await readPrivateKey(requireArg(values.key, '--key KEY (the fleet key, or a publisher key with --publisher-cert)'))
  if (values['publisher-cert'] == null) return { key }
  return { key, publisherCert: (await readFile(values['publisher-cert'], 'utf8')).trim() }
}

/** One call to the agent's API, answering the JSON body (ApiError for 4xx/5xx). */
export async function call (client: AgentClient, method: string, path: string, body?: unknown): Promise<any> {
  return (await client.request(method, path, body === undefined ? {} : { json: body })).body
}

const options = {
  ...AGENT_OPTIONS,
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
  const client = await AgentClient.from(values)
  // the authorisation binds the entry this agent will write: key, value, writer and timestamp
  const auth = await authorizeThrough(async (m, p, b) => await call(client, m, p, b), deploymentKey(parsed.id), JSON.stringify(spec), s)
  await call(client, 'PUT', `/v1/deployments/${parsed.id}`, { spec, auth })
  console.log(`deployment ${parsed.id} written through ${client.api}`)
}

export async function undeployCommand (argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  if (positionals.length === 0) throw new UsageError('missing deployment id')
  const s = await signer(values)
  const client = await AgentClient.from(values)
  for (const id of positionals) {
    const auth = await authorizeThrough(async (m, p, b) => await call(client, m, p, b), deploymentKey(id), null, s)
    await call(client, 'DELETE', `/v1/deployments/${id}`, { auth })
    console.log(`deployment ${id} removed`)
  }
}

export async function deploymentsCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options })
  const client = await AgentClient.from(values, { reading: true })
  const [{ deployments }, scheduler] = await Promise.all([call(client, 'GET', '/v1/deployments') as Promise<{ deployments: DeploymentStatus[] }>, call(client, 'GET', '/v1/scheduler')])
  if (values.json === true) {
    console.log(JSON.stringify({ scheduler, deployments }, null, 2))
    return
  }
  const short = (id: string): string => `…${id.slice(-8)}`
  console.log(table(['DEPLOYMENT', 'MODEL', 'REPLICAS', 'RUNNING', 'WINDOW', 'UPDATE', 'NODES'], deployments.map(d => [
    d.id,
    `${d.spec.model.name}@${d.spec.model.version ?? d.spec.model.digest?.slice(0, 12) ?? '?'}`,
    String(d.placement?.replicas ?? d.spec.replicas),
    String(d.running),
    d.window.active ? (d.window.nextChange == null ? 'always' : `until ${d.window.nextChange}`) : (d.window.nextChange == null ? 'ended' : `from ${d.window.nextChange}`),
    updateCell(d.update),
    d.instances.map(i => `${short(i.node)}:${i.state}${i.version == null ? '' : `@${i.version}`}`).join(' ')
  ])))
  console.log(`scheduler ${scheduler.leader == null ? 'none' : short(scheduler.leader)} (zone ${scheduler.zone}, term ${scheduler.term ?? '-'})`)
}

/** A model update in one cell: `1.0.0→2.0.0 canary 1/3`, `→3.0.0 rolled-back`. */
function updateCell (u: DeploymentStatus['update'] | undefined): string {
  if (u == null) return '-'
  const to = u.to.version ?? u.to.bundle.slice(0, 12)
  if (u.phase === 'canary' || u.phase === 'rolling') return `${u.from.version ?? u.from.bundle.slice(0, 12)}→${to} ${u.phase} ${u.step}/${u.of}`
  return `→${to} ${u.phase}`
}

/** drain | undrain | evict ID | unevict ID on one agent. */
export async function controlCommand (verb: 'drain' | 'undrain' | 'evict' | 'unevict', argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  const client = await AgentClient.from(values)
  let state
  if (verb === 'drain' || verb === 'undrain') state = await call(client, 'POST', `/v1/${verb}`)
  else {
    const id = requireArg(positionals[0], 'deployment id')
    state = await call(client, verb === 'evict' ? 'POST' : 'DELETE', `/v1/deployments/${id}/evict`)
  }
  console.log(`${state.node}: ${state.drained === true ? 'drained' : 'accepting work'}${state.excluded.length > 0 ? `; evicted: ${state.excluded.join(', ')}` : ''}`)
}
