import { stat } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { sha256File } from '../../packaging/bundle/build.ts'
import { readReleaseManifest } from '../../packaging/release/verify.ts'
import { newRolloutSpec, parseWaves, rolloutKey, type RolloutSpec } from '../release/rollout.ts'
import { parseLabels, requireArg } from './args.ts'
import { UsageError } from './errors.ts'
import { releaseSigner } from './release.ts'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { authorizeThrough } from './fleet-write.ts'
import { table } from './table.ts'
import type { RolloutStatus } from '../release/waves.ts'

export const ROLLOUT_USAGE = `gatemesh rollout create RELEASE... (--fleet FLEETDIR | --key KEY [--publisher-cert CERT]) [--waves 5%,25%,100%] [--labels k=v,...]
                        [--max-failures N] [--wave-wait SEC] [--health-deadline SEC] [--allow-downgrade] [--id ID] [--api URL | --data DIR] [--token-file FILE]
         (RELEASE: a release bundle FILE.zip, its DIGEST, or a VERSION the agent holds; one per CPU)
       gatemesh rollout status [ID] [--api URL | --data DIR] [--json]
       gatemesh rollout pause|resume|abort ID (--fleet FLEETDIR | --key KEY [--publisher-cert CERT]) [--api URL | --data DIR] [--token-file FILE]`

const options = {
  ...AGENT_OPTIONS,
  fleet: { type: 'string' },
  key: { type: 'string' },
  'publisher-cert': { type: 'string' },
  json: { type: 'boolean' }
} as const

async function call<T> (client: AgentClient, method: string, path: string, body?: unknown): Promise<T> {
  return (await client.request<T>(method, path, body === undefined ? { timeoutMs: 15_000 } : { json: body, timeoutMs: 15_000 })).body
}

function integer (text: string | undefined, flag: string): number | undefined {
  if (text == null) return undefined
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag}: "${text}" is not a whole number`)
  return Number(text)
}

type Release = RolloutSpec['releases'][number]

/** A RELEASE argument: a bundle file (read here), a digest or a version (looked up on the agent). */
async function resolveRelease (arg: string, client: AgentClient, held: () => Promise<Array<Release & { createdAt: string }>>): Promise<Release[]> {
  if (/^[0-9a-f]{64}$/.test(arg)) {
    const found = (await held()).filter(r => r.digest === arg)
    if (found.length === 0) throw new UsageError(`RELEASE: the agent at ${client.api} holds no release bundle ${arg}; publish it there first (gatemesh release publish FILE)`)
    return found.slice(0, 1).map(({ arch, version, digest, size }) => ({ arch, version, digest, size }))
  }
  if (/\.zip$/i.test(arg) || (await stat(arg).catch(() => null))?.isFile() === true) {
    const manifest = await readReleaseManifest(arg)
    return [{ arch: manifest.arch, version: manifest.version, digest: await sha256File(arg), size: (await stat(arg)).size }]
  }
  // a version: the newest bundle of it per CPU
  const byArch = new Map<string, Release & { createdAt: string }>()
  for (const r of (await held()).filter(r => r.version === arg)) {
    const seen = byArch.get(r.arch)
    if (seen == null || seen.createdAt < r.createdAt) byArch.set(r.arch, r)
  }
  if (byArch.size === 0) throw new UsageError(`RELEASE: "${arg}" is neither a release bundle file, a digest, nor a version the agent at ${client.api} holds (gatemesh release list)`)
  return [...byArch.values()].map(({ arch, version, digest, size }) => ({ arch, version, digest, size }))
}

export async function rolloutCommand (argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === 'create') return await createCommand(rest)
  if (sub === 'status') return await statusCommand(rest)
  if (sub === 'pause' || sub === 'resume' || sub === 'abort') return await changeCommand(sub, rest)
  throw new UsageError(`unknown rollout command "${sub ?? ''}"`)
}

async function createCommand (argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...options,
      waves: { type: 'string' },
      labels: { type: 'string' },
      'max-failures': { type: 'string' },
      'wave-wait': { type: 'string' },
      'health-deadline': { type: 'string' },
      'allow-downgrade': { type: 'boolean' },
      id: { type: 'string' },
      description: { type: 'string' }
    }
  })
  if (positionals.length === 0) throw new UsageError('missing RELEASE (a release bundle file, its digest, or a version)')
  const signer = await releaseSigner(values)
  const client = await AgentClient.from(values)
  let listing: Promise<Array<Release & { createdAt: string }>> | undefined
  const held = async (): Promise<Array<Release & { createdAt: string }>> => await (listing ??= call<{ releases: Array<Release & { createdAt: string }> }>(client, 'GET', '/v1/releases').then(r => r.releases))
  const releases = (await Promise.all(positionals.map(async p => await resolveRelease(p, client, held)))).flat()
  const maxFailures = integer(values['max-failures'], '--max-failures')
  const waveWaitSec = integer(values['wave-wait'], '--wave-wait')
  const healthDeadlineSec = integer(values['health-deadline'], '--health-deadline')
  const spec = newRolloutSpec({
    releases,
    ...(values.waves == null ? {} : { waves: parseWaves(values.waves) }),
    labels: parseLabels(values.labels),
    ...(maxFailures == null ? {} : { maxFailures }),
    ...(waveWaitSec == null ? {} : { waveWaitSec }),
    ...(healthDeadlineSec == null ? {} : { healthDeadlineSec }),
    allowDowngrade: values['allow-downgrade'] === true,
    ...(values.id == null ? {} : { id: values.id }),
    ...(values.description == null ? {} : { description: values.description })
  })
  // the authorisation binds the entry this agent will write: key, value, writer and timestamp
  const auth = await authorizeThrough(async (m, p, b) => await call(client, m, p, b), rolloutKey(spec.id), JSON.stringify(spec), signer)
  await call(client, 'PUT', `/v1/rollouts/${spec.id}`, { rollout: spec, auth })
  if (values.json === true) { console.log(JSON.stringify(spec)); return }
  console.log(`rollout ${spec.id} written through ${client.api}: release ${releases[0]!.version} (${releases.map(r => r.arch).join(', ')}) in waves ${spec.waves.map(w => `${w}%`).join(', ')}`)
  console.log(`  halts after ${spec.maxFailures} failure(s); each node has ${spec.healthDeadlineSec}s to prove itself healthy; gatemesh rollout status ${spec.id}`)
}

async function changeCommand (verb: 'pause' | 'resume' | 'abort', argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  const id = requireArg(positionals[0], 'rollout ID')
  const signer = await releaseSigner(values)
  const client = await AgentClient.from(values)
  const status = await call<RolloutStatus>(client, 'GET', `/v1/rollouts/${encodeURIComponent(id)}`)
  const state = verb === 'pause' ? 'paused' : verb === 'resume' ? 'active' : 'aborted'
  if (status.spec.state === state) { console.log(`rollout ${id} is ${state} already`); return }
  const spec = { ...status.spec, state }
  const auth = await authorizeThrough(async (m, p, b) => await call(client, m, p, b), rolloutKey(id), JSON.stringify(spec), signer)
  await call(client, 'PUT', `/v1/rollouts/${encodeURIComponent(id)}`, { rollout: spec, auth })
  console.log(`rollout ${id} ${state}${verb === 'abort' ? ': no node starts it any more; nodes that took it keep it' : ''}`)
}

function render (s: RolloutStatus): string {
  const lines = [`rollout ${s.id}: ${s.version}, ${s.phase}, wave ${s.currentWave + 1}/${s.waves.length}, ${s.failures} failure(s) of ${s.spec.maxFailures} allowed`]
  lines.push('  waves: ' + s.waves.map(w => `${w.percent}% ${w.done}/${w.size} done${w.failed > 0 ? `, ${w.failed} failed` : ''}${w.started ? '' : ' (waiting)'}`).join(' · '))
  if (s.targets.length > 0) {
    lines.push(table(['NODE', 'WAVE', 'ARCH', 'OUTCOME', 'RUNS', 'DETAIL'], s.targets.map(t => [t.peer, String(t.wave + 1), t.arch, t.outcome + (t.state == null ? '' : ` (${t.state})`), t.version, (t.detail ?? '').slice(0, 100)])))
  }
  for (const e of s.excluded) lines.push(`  not a target: ${e.peer}: ${e.reason}`)
  return lines.join('\n')
}

async function statusCommand (argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options })
  const client = await AgentClient.from(values, { reading: true })
  const list = positionals[0] == null
    ? (await call<{ rollouts: RolloutStatus[] }>(client, 'GET', '/v1/rollouts')).rollouts
    : [await call<RolloutStatus>(client, 'GET', `/v1/rollouts/${encodeURIComponent(positionals[0])}`)]
  if (values.json === true) { console.log(JSON.stringify(positionals[0] == null ? list : list[0], null, 2)); return }
  if (list.length === 0) { console.log('no rollouts'); return }
  console.log(list.map(render).join('\n\n'))
}
