import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { isArch } from '../../packaging/image/arch.ts'
import { readPrivateKey, type Signer } from '../../packaging/trust.ts'
import { VERSION } from '../version.ts'
import { requireArg } from './args.ts'
import { formatBytes } from './bundle.ts'
import { UsageError } from './errors.ts'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { table } from './table.ts'

export const RELEASE_USAGE = `gatemesh release build --arch x64|arm64 --out FILE.zip (--fleet FLEETDIR | --key KEY [--publisher-cert CERT]) [--version V]
                        [--base IMAGE.tar.gz|RELEASE.zip | --with-node] [--node-version V] [--cache-dir DIR]
       gatemesh release publish FILE.zip [--api URL | --data DIR] [--token-file FILE] [--json]
       gatemesh release list [--api URL | --data DIR] [--json]
       gatemesh release show [--api URL | --data DIR] [--json]`

/** The fleet key (`--fleet DIR` or `--key`), or a publisher key with its certificate. */
export async function releaseSigner (values: { fleet?: string | undefined, key?: string | undefined, 'publisher-cert'?: string | undefined }): Promise<Signer> {
  if (values.fleet != null && values.key != null) throw new UsageError('--fleet and --key both name a signing key: pick one')
  const file = values.fleet != null ? resolve(values.fleet, 'fleet.key') : requireArg(values.key, '--fleet FLEETDIR or --key KEY (the fleet key, or a publisher key with --publisher-cert)')
  const key = await readPrivateKey(file)
  if (values['publisher-cert'] == null) return { key }
  return { key, publisherCert: (await readFile(values['publisher-cert'], 'utf8')).trim() }
}

export async function releaseCommand (argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === 'build') return await buildCommand(rest)
  if (sub === 'publish') return await (await import('./bundle-remote.ts')).publishCommand(rest)
  if (sub === 'list') return await listCommand(rest)
  if (sub === 'show') return await showCommand(rest)
  throw new UsageError(`unknown release command "${sub ?? ''}"`)
}

async function buildCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      arch: { type: 'string' },
      out: { type: 'string' },
      version: { type: 'string' },
      fleet: { type: 'string' },
      key: { type: 'string' },
      'publisher-cert': { type: 'string' },
      base: { type: 'string' },
      'with-node': { type: 'boolean' },
      'node-version': { type: 'string' },
      'cache-dir': { type: 'string' }
    }
  })
  const arch = requireArg(values.arch, '--arch x64|arm64')
  if (!isArch(arch)) throw new UsageError(`--arch: "${arch}" must be x64 or arm64`)
  const out = resolve(requireArg(values.out, '--out FILE.zip'))
  if (values.base != null && values['with-node'] === true) throw new UsageError('--base ships the runtime only when it changed; --with-node always: pick one')
  const signer = await releaseSigner(values)
  const { buildRelease, RELEASE_STEPS } = await import('../../packaging/release/index.ts')
  let step = 0
  const built = await buildRelease({
    arch,
    version: values.version ?? VERSION,
    out,
    signer,
    ...(values.base == null ? {} : { base: resolve(values.base) }),
    ...(values['with-node'] === true ? { withNode: true } : {}),
    ...(values['node-version'] == null ? {} : { nodeVersion: values['node-version'] }),
    ...(values['cache-dir'] == null ? {} : { cacheDir: resolve(values['cache-dir']) }),
    onStep: s => { console.log(`[${++step}/${RELEASE_STEPS.length}] ${s}`) }
  })
  console.log(`built release ${built.manifest.version} for ${arch}: ${built.out}`)
  console.log(`  digest  ${built.digest}`)
  console.log(`  size    ${formatBytes(built.size)}, ${built.manifest.files.length} files, signed by ${built.manifest.publisher}`)
  console.log(`  node    ${built.node.version}: ${built.node.included ? 'included' : 'not included'} (${built.node.why})`)
  console.log(`  took    ${(built.durationMs / 1000).toFixed(1)} s; next: gatemesh release publish ${built.out}`)
}

async function get<T> (values: Parameters<typeof AgentClient.from>[0], path: string): Promise<T> {
  const client = await AgentClient.from(values, { reading: true })
  return (await client.request<T>('GET', path)).body
}

interface ReleaseListing { digest: string, size: number, version: string, arch: string, node: { version: string, included: boolean }, createdAt: string, publisher: string }

async function listCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...AGENT_OPTIONS, json: { type: 'boolean' } } })
  const { releases } = await get<{ releases: ReleaseListing[] }>(values, '/v1/releases')
  if (values.json === true) { console.log(JSON.stringify(releases, null, 2)); return }
  console.log(table(['VERSION', 'ARCH', 'NODE', 'SIZE', 'DIGEST', 'CREATED'], releases.map(r => [r.version, r.arch, `${r.node.version}${r.node.included ? ' (in)' : ''}`, formatBytes(r.size), r.digest, r.createdAt])))
}

async function showCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...AGENT_OPTIONS, json: { type: 'boolean' } } })
  const view = await get<import('../release/service.ts').NodeReleaseView>(values, '/v1/release')
  if (values.json === true) { console.log(JSON.stringify(view, null, 2)); return }
  const r = view.record
  console.log(`release ${r.version} (${r.arch}, Node ${r.node})${r.previous == null ? '' : `, previous ${r.previous}`}`)
  console.log(`managed ${r.managed ? 'yes: the image\'s loader can switch releases and roll back' : `no: ${r.reason ?? ''}`}`)
  console.log(`state   ${r.state}${r.rollout == null ? '' : ` (rollout ${r.rollout}${r.target == null ? '' : ` to ${r.target}`})`}${r.detail == null ? '' : `: ${r.detail}`}`)
  if (view.installed.length > 0) console.log(`held    ${view.installed.map(i => i.version).join(', ')}`)
  for (const h of view.history.slice(-5)) console.log(`  ${new Date(h.at).toISOString()} ${h.from} → ${h.to}: ${h.result}${h.detail == null ? '' : ` (${h.detail})`}`)
}
