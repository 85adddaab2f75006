import { readFile, stat } from 'node:fs/promises'
import { basename, dirname, resolve } from 'node:path'
import { Type } from '@sinclair/typebox'
import { TensorSpecSchema, type TensorSpec } from '../../packaging/manifest.ts'
import { compile, describeError } from '../../protocols/schema.ts'
import { parseArgs } from 'node:util'
import { buildBundle, inspectBundle, verifyBundle, type BundleInfo } from '../../packaging/bundle/index.ts'
import { readPrivateKey, readPublicKey } from '../../packaging/trust.ts'
import { requireArg } from './args.ts'
import { UsageError } from './errors.ts'
import { table } from './table.ts'

export const BUNDLE_USAGE = `gatemesh bundle build MODEL --name N --version V [--inputs SPECS.json] [--outputs SPECS.json] [--config FILE] [--action FILE] --key KEY [--cert PUBLISHER_CERT] --out FILE.zip
         (MODEL: a TF.js model folder, or an .onnx, .tflite or model.json file)
       gatemesh bundle verify FILE --fleet-pub PUB [--digest SHA256] [--json]
       gatemesh bundle inspect FILE [--fleet-pub PUB] [--json]
       gatemesh bundle publish FILE [--api URL | --data DIR] [--token-file FILE] [--json]
       gatemesh bundle pull DIGEST [--api URL | --data DIR] [--token-file FILE] [--no-wait] [--json]`

const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  build: buildCommand,
  verify: verifyCommand,
  inspect: inspectCommand,
  publish: async argv => { await (await import('./bundle-remote.ts')).publishCommand(argv) },
  pull: async argv => { await (await import('./bundle-remote.ts')).pullCommand(argv) }
}

export async function bundleCommand (argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  const run = sub == null ? undefined : SUBCOMMANDS[sub]
  if (run == null) throw new UsageError(`unknown bundle command "${sub ?? ''}"`)
  await run(rest)
}

const validateSpecs = compile(Type.Array(TensorSpecSchema, { minItems: 1, maxItems: 32 }))

export function formatBytes (n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`
}

async function buildCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      version: { type: 'string' },
      config: { type: 'string' },
      action: { type: 'string' },
      key: { type: 'string' },
      cert: { type: 'string' },
      out: { type: 'string' },
      'model-file': { type: 'string' },
      inputs: { type: 'string' },
      outputs: { type: 'string' },
      json: { type: 'boolean' }
    }
  })
  // a model file (.onnx, .tflite, model.json) or the folder holding it
  const model = resolve(requireArg(positionals[0], 'MODEL'))
  const isFile = (await stat(model).catch(() => { throw new UsageError(`${model}: no such model file or folder`) })).isFile()
  const modelDir = isFile ? dirname(model) : model
  const modelFile = values['model-file'] ?? (isFile ? basename(model) : undefined)
  const inputs = values.inputs == null ? undefined : await readSpecs(values.inputs, '--inputs')
  const outputs = values.outputs == null ? undefined : await readSpecs(values.outputs, '--outputs')
  const key = await readPrivateKey(resolve(requireArg(values.key, '--key KEY')))
  const publisherCert = values.cert == null ? undefined : (await readFile(resolve(values.cert), 'utf8')).trim()
  const built = await buildBundle({
    modelDir,
    name: requireArg(values.name, '--name N'),
    version: requireArg(values.version, '--version V'),
    out: resolve(requireArg(values.out, '--out FILE.zip')),
    signer: publisherCert == null ? { key } : { key, publisherCert },
    ...(modelFile == null ? {} : { modelFile }),
    ...(inputs == null ? {} : { inputs }),
    ...(outputs == null ? {} : { outputs }),
    ...(values.config == null ? {} : { config: resolve(values.config) }),
    ...(values.action == null ? {} : { action: resolve(values.action) })
  })
  if (values.json === true) {
    console.log(JSON.stringify({ digest: built.digest, size: built.size, out: built.out, manifest: built.manifest }))
    return
  }
  const m = built.manifest
  console.log(`built ${m.name}@${m.version} (${m.model.format} model, signed by ${m.publisher})`)
  console.log(`  digest  ${built.digest}`)
  console.log(`  size    ${formatBytes(built.size)} in ${built.index.hashes.length} chunk(s) of ${formatBytes(built.index.chunkSize)}`)
  console.log(`  file    ${built.out}`)
}

/** Tensor specs from a JSON file (`[{name, dtype, shape, labels?}]`), checked; the model check then compares them with the model. */
async function readSpecs (path: string, flag: string): Promise<TensorSpec[]> {
  let value: unknown
  try {
    value = JSON.parse(await readFile(resolve(path), 'utf8'))
  } catch (err: any) {
    throw new UsageError(`${flag}: ${path} is not a JSON file: ${err.message}`)
  }
  if (!validateSpecs(value)) {
    const { message } = describeError(flag, validateSpecs.errors)
    throw new UsageError(message)
  }
  return value
}

async function verifyCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'fleet-pub': { type: 'string' }, digest: { type: 'string' }, json: { type: 'boolean' } }
  })
  const file = resolve(requireArg(positionals[0], 'FILE'))
  const fleetPublicKey = await readPublicKey(resolve(requireArg(values['fleet-pub'], '--fleet-pub PUB')))
  const v = await verifyBundle(file, { fleetPublicKey, ...(values.digest == null ? {} : { digest: values.digest }) })
  if (values.json === true) {
    console.log(JSON.stringify({ ok: true, digest: v.digest, size: v.size, signer: v.signer, name: v.manifest.name, version: v.manifest.version }))
    return
  }
  console.log(`OK ${v.manifest.name}@${v.manifest.version} signed by ${v.signer}`)
  console.log(`  digest ${v.digest}`)
}

async function inspectCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'fleet-pub': { type: 'string' }, json: { type: 'boolean' } }
  })
  const file = resolve(requireArg(positionals[0], 'FILE'))
  const fleetPublicKey = values['fleet-pub'] == null ? undefined : await readPublicKey(resolve(values['fleet-pub']))
  const info = await inspectBundle(file, fleetPublicKey == null ? {} : { fleetPublicKey })
  if (values.json === true) {
    console.log(JSON.stringify(info))
    return
  }
  console.log(renderInfo(info))
}

function renderInfo (info: BundleInfo): string {
  const m = info.manifest
  const spec = (s: typeof m.inputs): string => s.map(t => `${t.name} ${t.dtype}[${t.shape.map(d => d < 0 ? '?' : d).join(',')}]`).join(', ')
  const signature = info.signer.verified == null
    ? `${info.signer.claimed} (not checked: pass --fleet-pub)`
    : info.signer.verified ? `${info.signer.claimed} (verified)` : `${info.signer.claimed} — INVALID: ${info.signer.error?.message ?? ''}`
  const lines = [
    `${m.name}@${m.version}`,
    `  digest     ${info.digest}`,
    `  size       ${formatBytes(info.size)} zip, ${formatBytes(info.unpackedBytes)} unpacked, ${info.chunks} chunk(s) of ${formatBytes(info.chunkSize)}`,
    `  created    ${m.createdAt}`,
    `  publisher  ${m.publisher}`,
    `  signer     ${signature}`,
    `  model      ${m.model.format} (${m.runtime}), entry ${m.model.entry}`,
    `  inputs     ${spec(m.inputs)}`,
    `  outputs    ${spec(m.outputs)}`,
    ...(m.config == null ? [] : [`  config     ${m.config}`]),
    ...(m.action == null ? [] : [`  action     ${m.action}`]),
    '',
    table(['FILE', 'SIZE', 'COMPRESSED'], info.files.map(f => [f.path, formatBytes(f.size), formatBytes(f.compressedSize)]))
  ]
  return lines.join('\n')
}
