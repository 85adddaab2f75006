import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { basename, extname, join, posix } from 'node:path'
import { BUNDLE_PATH_PATTERN, type FileEntry, type Manifest, type TensorSpec } from '../manifest.ts'
import { signDetached, TYP_BUNDLE_MANIFEST, type Signer } from '../trust.ts'
import { RUNTIME_OF } from '../manifest.ts'
import { findModelFile, formatOf } from '../models/formats.ts'
import { reconcileSpecs } from '../models/specs.ts'
import { BuildInputError, InvalidEntryNameError, ModelLoadError } from './errors.ts'
import { checkModel, type ModelCheckLimits } from './model-check.ts'
import { MANIFEST_FILE, parseManifest, SIGNATURE_FILE } from './verify.ts'
import { writeBundleZip, type WrittenZip, type ZipSource } from './zip-write.ts'
import type { ChunkIndex } from './chunk-index.ts'

export interface BuildBundleInit {
  /** Directory holding the model: a TensorFlow.js model.json with its weight shards, an .onnx or a .tflite file. */
  modelDir: string
  /** The model's entry file in `modelDir`. @default model.json, else the folder's one .onnx or .tflite file */
  modelFile?: string
  name: string
  version: string
  /** The deployment defaults: a JSON file path, or the object itself. @default {} */
  config?: string | Record<string, unknown>
  /** Path of an action script shipped with the model. */
  action?: string
  /** The fleet key, or a publisher key with its fleet-signed certificate. */
  signer: Signer
  /** Where the zip goes. */
  out: string
  /** @default now */
  createdAt?: Date
  /** Load and run the model with its runtime (in a child process with memory and time limits) before signing. @default true */
  validate?: boolean
  /** Limits of that check. */
  check?: ModelCheckLimits
  /**
   * Specs for the model's inputs and outputs, checked against what the
   * model declares (names, dtypes, ranks, fixed dimensions): e.g. to add
   * class labels. Without `validate` they are taken as they are.
   */
  inputs?: TensorSpec[]
  outputs?: TensorSpec[]
}

export interface BuiltBundle {
  digest: string
  size: number
  out: string
  manifest: Manifest
  index: ChunkIndex
}

/** Folder of the model inside a bundle. */
export const MODEL_DIR = 'model'
export const CONFIG_FILE = 'config.json'
const PATH_RE = new RegExp(BUNDLE_PATH_PATTERN)

/** sha256 of a file's bytes, lowercase hex, read as a stream. */
export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** The publisher name a signer signs as: `fleet`, or the subject of its certificate. */
export function publisherOf (signer: Signer): string {
  if (signer.publisherCert == null) return 'fleet'
  const payload = signer.publisherCert.split('.')[1] ?? ''
  const sub = (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { sub?: unknown }).sub
  if (typeof sub !== 'string' || sub === '') throw new TypeError('publisher certificate names no subject')
  return sub
}

/**
 * Build a signed bundle from a model directory (TensorFlow.js layers or
 * graph, ONNX or TensorFlow Lite): check the model loads and runs, read its
 * inputs and outputs from it, gather its files, write `config.json` and the
 * optional action script, sign the manifest (detached JWS over its exact
 * bytes) and write the zip with its chunk index. Returns the bundle id
 * (sha256 of the zip).
 */
export async function buildBundle (init: BuildBundleInit): Promise<BuiltBundle> {
  let modelFile: string
  let format: Awaited<ReturnType<typeof formatOf>>
  try {
    modelFile = init.modelFile ?? await findModelFile(init.modelDir)
    format = await formatOf(init.modelDir, modelFile)
  } catch (err: any) {
    throw new ModelLoadError(err.message, { cause: err, entry: init.modelFile ?? 'model' })
  }
  let modelFiles = [modelFile]
  if (RUNTIME_OF[format] === 'tfjs') {
    const { tfjsModelFiles } = await import('../models/tfjs.ts')
    modelFiles = (await tfjsModelFiles(init.modelDir, modelFile)).files
  }
  for (const f of modelFiles) {
    if (!PATH_RE.test(`${MODEL_DIR}/${f}`)) throw new InvalidEntryNameError(`${f}: model file names must be relative paths of letters, digits and ._-/`, { entry: f })
  }

  let inputs = init.inputs
  let outputs = init.outputs
  if (init.validate !== false || inputs == null || outputs == null) {
    const checked = await checkModel(format, join(init.modelDir, modelFile), init.check)
    const byPosition = RUNTIME_OF[format] === 'tfjs'
    inputs = reconcileSpecs(checked.inputs, inputs, 'inputs', { byPosition })
    outputs = reconcileSpecs(checked.outputs, outputs, 'outputs', { byPosition })
  }

  const sources: ZipSource[] = []
  const files: FileEntry[] = []
  for (const f of modelFiles) {
    const file = join(init.modelDir, f)
    const path = `${MODEL_DIR}/${f}`
    files.push({ path, size: (await stat(file)).size, sha256: await sha256File(file) })
    sources.push({ path, file })
  }
  const configBytes = typeof init.config === 'string'
    ? await readConfig(init.config)
    : Buffer.from(JSON.stringify(init.config ?? {}, null, 2) + '\n')
  files.push({ path: CONFIG_FILE, size: configBytes.byteLength, sha256: createHash('sha256').update(configBytes).digest('hex') })
  sources.push({ path: CONFIG_FILE, data: configBytes })
  let action: string | undefined
  if (init.action != null) {
    const ext = extname(init.action) === '' ? '.js' : extname(init.action)
    action = `action${ext}`
    if (!PATH_RE.test(action)) throw new InvalidEntryNameError(`${basename(init.action)}: action script extension must be letters and digits`, { entry: action })
    files.push({ path: action, size: (await stat(init.action)).size, sha256: await sha256File(init.action) })
    sources.push({ path: action, file: init.action })
  }

  const createdAt = init.createdAt ?? new Date()
  const manifest: Manifest = {
    schemaVersion: 1,
    name: init.name,
    version: init.version,
    createdAt: createdAt.toISOString(),
    publisher: publisherOf(init.signer),
    runtime: RUNTIME_OF[format],
    model: { format, entry: `${MODEL_DIR}/${modelFile}` },
    inputs,
    outputs,
    config: CONFIG_FILE,
    ...(action == null ? {} : { action }),
    files
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n')
  // the same checks a receiver runs, so a bad name or version fails here and not on a gateway
  parseManifest(manifestBytes)
  const written = await writeSignedZip(manifestBytes, TYP_BUNDLE_MANIFEST, init.signer, sources, init.out, createdAt)
  return { ...written, out: init.out, manifest }
}

/**
 * Sign a manifest's exact bytes (detached JWS of type `typ`) and write the
 * bundle zip: the manifest, its signature, then `sources`. Any kind of
 * bundle (model or release) is laid out so.
 */
export async function writeSignedZip (manifestBytes: Buffer, typ: string, signer: Signer, sources: ZipSource[], out: string, createdAt: Date): Promise<WrittenZip> {
  const signature = await signDetached(manifestBytes, typ, signer)
  return await writeBundleZip([
    { path: MANIFEST_FILE, data: manifestBytes },
    { path: SIGNATURE_FILE, data: Buffer.from(signature) },
    ...sources
  ], out, createdAt)
}

async function readConfig (path: string): Promise<Buffer> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err: any) {
    throw new BuildInputError(`${path}: cannot read config: ${err.message}`, { cause: err, entry: CONFIG_FILE })
  }
  try {
    const value = JSON.parse(bytes.toString('utf8'))
    if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new Error('must be a JSON object')
  } catch (err: any) {
    throw new BuildInputError(`${path}: config is not a JSON object: ${err.message}`, { cause: err, entry: CONFIG_FILE })
  }
  return bytes
}
