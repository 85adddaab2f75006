import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildBundle, ModelSpecError } from '../../packaging/bundle/index.ts'
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts'
import { placeModelFiles, type UploadedFile } from './model-files.ts'
import type { Database } from '../../node/store/db.ts'
import type { ModelCheckLimits } from '../../packaging/bundle/model-check.ts'
import { LEGACY_FORMATS, type ModelFormat, type TensorSpec } from '../../packaging/manifest.ts'
import type { Signer } from '../../packaging/trust.ts'
import type { Logger } from 'pino'

/** The descriptive fields of the upload form, kept as they were given. */
export interface ModelMetadata {
  description?: string
  /** where it is meant to run, e.g. gateway, server, edge+cloud */
  deploymentType?: string
  /** the kind of AI/IoT task, e.g. anomaly detection, image classification */
  modelType?: string
  inputFormat?: string
  outputFormat?: string
}

/** One version of a model in the repository. */
export interface ModelVersion {
  name: string
  version: string
  /** the user who uploaded it */
  owner: string
  createdAt: number
  /** sha256 of the signed bundle zip: its id in the mesh */
  digest: string
  size: number
  /** tfjs-layers, tfjs-graph, onnx or tflite */
  format: ModelFormat
  inputs: TensorSpec[]
  outputs: TensorSpec[]
  /** the instance defaults (config.json) */
  config: Record<string, unknown>
  /** the action script's file name inside the bundle, when one came */
  action: string | null
  /** model files, relative to the model folder */
  files: string[]
  metadata: ModelMetadata
}

export interface ModelUpload {
  owner: string
  name: string
  version: string
  metadata: ModelMetadata
  model: UploadedFile[]
  /** validated instance defaults */
  config: Record<string, unknown>
  action?: UploadedFile
  inputs?: TensorSpec[]
  outputs?: TensorSpec[]
  /** the request's scratch directory; removed by the caller */
  staging: string
}

export interface ModelRepositoryComponents {
  db: Database
  /** `<dataDir>/models` */
  dir: string
  /** the fleet key: every bundle is signed before it leaves */
  signer: Signer
  /** Hand a signed bundle (a copy the callee may move) to the mesh: verify, store, advertise. */
  publish: (zip: string) => Promise<void>
  /** Whether the mesh holds this complete bundle already (so it need not be published again). */
  held?: (digest: string) => boolean
  /** Digest of a bundle some node already advertises under this name and version. */
  meshDigest: (name: string, version: string) => string | undefined
  logger: Logger
}

export interface ModelRepositoryInit {
  /** Largest upload: all files of one request together. @default DEFAULT_MAX_UPLOAD_BYTES */
  maxUploadBytes?: number
  /** Largest model once a zip of it is unpacked. @default 4 × maxUploadBytes */
  maxModelBytes?: number
  /** Memory and time limits of the model check (a child process per upload, one at a time). */
  check?: ModelCheckLimits
}

export const DEFAULT_MAX_UPLOAD_BYTES = 256 * 1024 * 1024
export const BUNDLE_FILE = 'bundle.zip'

const keyOf = (name: string, version: string): string => `${name}\u0000${version}`

export type RepositoryEvent = CustomEvent<{ name: string, version: string }>

/**
 * The model repository: every uploaded version, per user, under
 * `<dir>/<owner>/<name>/<version>/` (the model files, config.json, the
 * action script and the signed bundle.zip), indexed in a level sublevel.
 * A name and version are taken once, by whoever uploads them first; the
 * mesh resolves deployments by name and version, so they must be unique
 * across users and across bundles published to the mesh some other way.
 */
export class ModelRepository extends EventTarget {
  readonly #c: ModelRepositoryComponents
  readonly #db
  readonly #versions = new Map<string, ModelVersion>()
  readonly #pending = new Set<string>()
  readonly maxUploadBytes: number
  readonly maxModelBytes: number
  readonly #check: ModelCheckLimits
  /** where uploads stage their files: beside the repository, so they move in by rename */
  readonly stagingDir: string

  constructor (components: ModelRepositoryComponents, init: ModelRepositoryInit = {}) {
    super()
    this.#c = components
    this.#db = components.db.sublevel<string, ModelVersion>('models', { valueEncoding: 'json' })
    this.maxUploadBytes = init.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES
    this.maxModelBytes = init.maxModelBytes ?? 4 * this.maxUploadBytes
    this.#check = init.check ?? {}
    this.stagingDir = join(components.dir, '.staging')
  }

  async open (): Promise<void> {
    // what a crash left half-uploaded
    await rm(this.stagingDir, { recursive: true, force: true })
    // versions stored before ONNX and TFLite name their TF.js format the old way
    for await (const [key, v] of this.#db.iterator()) this.#versions.set(key, { ...v, format: LEGACY_FORMATS[v.format] ?? v.format })
  }

  /**
   * Publish every stored bundle the embedded agent no longer holds (its
   * store evicts unreferenced bundles when full; the repository keeps its copy).
   */
  async republish (): Promise<void> {
    for (const v of this.#versions.values()) {
      if (this.#c.held?.(v.digest) === true) continue
      await this.#publishCopy(v).catch(err => { this.#c.logger.warn({ model: v.name, version: v.version, err: err.message }, 'could not publish a stored bundle') })
    }
  }

  /** Newest first within a name; names in order. */
  list (): ModelVersion[] {
    return [...this.#versions.values()].sort((a, b) => a.name.localeCompare(b.name) || b.createdAt - a.createdAt)
  }

  versions (name: string): ModelVersion[] {
    const list = this.list().filter(v => v.name === name)
    if (list.length === 0) throw new NotFoundError(`no model ${name} in the repository`)
    return list
  }

  get (name: string, version: string): ModelVersion {
    const v = this.#versions.get(keyOf(name, version))
    if (v == null) throw new NotFoundError(`no model ${name} version ${version} in the repository`)
    return v
  }

  has (name: string, version: string): boolean {
    return this.#versions.has(keyOf(name, version))
  }

  byDigest (digest: string): ModelVersion | undefined {
    for (const v of this.#versions.values()) if (v.digest === digest) return v
    return undefined
  }

  /** Where the signed zip of a version is. */
  bundlePath (v: ModelVersion): string {
    return join(this.#dirOf(v), BUNDLE_FILE)
  }

  /**
   * Store a new version: lay out its files, build the bundle (loading and
   * running the model with its runtime first, in a child process with
   * memory and time limits), sign it with the fleet key, keep it, and
   * publish it into the mesh. 409 when the name and version exist; a user
   * spec that disagrees with the model is a 400 naming `body.inputs[i]…`;
   * a model that does not load or run is a 422. A refused upload leaves
   * nothing behind: its files are only in the request's staging folder.
   */
  async add (upload: ModelUpload): Promise<ModelVersion> {
    const key = keyOf(upload.name, upload.version)
    this.#checkFree(upload.name, upload.version)
    this.#pending.add(key)
    try {
      const work = join(upload.staging, 'build')
      const modelDir = join(work, 'model')
      const modelFile = await placeModelFiles(upload.model, modelDir, { maxBytes: this.maxModelBytes })
      let action: string | undefined
      if (upload.action != null) {
        // the bundle names it action<ext>; keep the extension the user gave
        const ext = /\.(m?js|cjs)$/.exec(upload.action.filename)?.[0] ?? '.js'
        action = join(work, `action${ext}`)
        await rename(upload.action.path, action)
      }
      const out = join(work, BUNDLE_FILE)
      const built = await buildBundle({
        modelDir,
        modelFile,
        name: upload.name,
        version: upload.version,
        config: upload.config,
        ...(action == null ? {} : { action }),
        signer: this.#c.signer,
        out,
        validate: true,
        check: this.#check,
        ...(upload.inputs == null ? {} : { inputs: upload.inputs }),
        ...(upload.outputs == null ? {} : { outputs: upload.outputs })
      }).catch(err => {
        // a spec that disagrees with the model names the form field at fault
        if (err instanceof ModelSpecError) throw new BadRequestError(`body.${err.message}`, { field: `body.${err.field}`, cause: err })
        throw err
      })
      // someone may have published the same name and version to the mesh meanwhile
      this.#checkFree(upload.name, upload.version, true)
      const record: ModelVersion = {
        name: upload.name,
        version: upload.version,
        owner: upload.owner,
        createdAt: Date.now(),
        digest: built.digest,
        size: built.size,
        format: built.manifest.model.format,
        inputs: built.manifest.inputs,
        outputs: built.manifest.outputs,
        config: upload.config,
        action: built.manifest.action ?? null,
        files: built.manifest.files.map(f => f.path).filter(p => p.startsWith('model/')).map(p => p.slice('model/'.length)),
        metadata: upload.metadata
      }
      const dir = this.#dirOf(record)
      await rm(dir, { recursive: true, force: true })
      await mkdir(join(dir, '..'), { recursive: true })
      await writeFile(join(work, 'config.json'), JSON.stringify(upload.config, null, 2) + '\n')
      await writeFile(join(work, 'metadata.json'), JSON.stringify(record, null, 2) + '\n')
      await rename(work, dir)
      await this.#publishCopy(record)
      await this.#db.put(key, record)
      this.#versions.set(key, record)
      this.#c.logger.info({ model: record.name, version: record.version, owner: record.owner, digest: record.digest, size: record.size }, 'model stored, signed and published')
      this.dispatchEvent(new CustomEvent('change', { detail: { name: record.name, version: record.version } }))
      return record
    } finally {
      this.#pending.delete(key)
    }
  }

  #checkFree (name: string, version: string, afterBuild = false): void {
    const key = keyOf(name, version)
    if (this.#versions.has(key) || (!afterBuild && this.#pending.has(key))) {
      throw new ConflictError(`model ${name} version ${version} exists; versions are never overwritten — upload a new version`, { field: 'body.version' })
    }
    const digest = this.#c.meshDigest(name, version)
    if (digest != null) {
      throw new ConflictError(`the mesh already holds a bundle ${name} ${version} (${digest.slice(0, 12)}…); versions are never overwritten — upload a new version`, { field: 'body.version' })
    }
  }

  async #publishCopy (v: ModelVersion): Promise<void> {
    const copy = `${this.bundlePath(v)}.publish-${process.pid}-${Date.now()}`
    await copyFile(this.bundlePath(v), copy)
    try {
      await this.#c.publish(copy)
    } finally {
      await rm(copy, { force: true })
    }
  }

  #dirOf (v: Pick<ModelVersion, 'owner' | 'name' | 'version'>): string {
    return join(this.#c.dir, v.owner, v.name, v.version)
  }
}
