import { createReadStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { Type, type Static } from '@sinclair/typebox'
import { parseInstanceSpec } from '../../node/runtime/spec.ts'
import { ManifestSchema, TensorSpecSchema, type TensorSpec } from '../../packaging/manifest.ts'
import { compile, describeError } from '../../protocols/schema.ts'
import { principalOf } from '../auth/plugin.ts'
import { BadRequestError } from '../errors.ts'
import { FILE_MARKER_PATTERN, registerUploads, uploadedFile, uploadedFiles } from '../models/upload.ts'
import { errorResponses, NoQuery } from './schemas.ts'
import type { CoordinatorContext } from '../app.ts'
import type { ModelMetadata, ModelVersion } from '../models/repository.ts'
import type { FastifyInstance, FastifyRequest } from 'fastify'

const Name = ManifestSchema.properties.name
const Version = ManifestSchema.properties.version
const FileMarker = Type.String({ pattern: FILE_MARKER_PATTERN, description: 'a file part' })
const Text = (maxLength: number, description: string) => Type.Optional(Type.String({ minLength: 1, maxLength, description }))

/** The upload form: text fields and file parts (`multipart/form-data`). */
const UploadBody = Type.Object({
  name: Name,
  version: Version,
  description: Text(512, 'free text'),
  deploymentType: Text(64, 'where it is meant to run, e.g. gateway, server, edge-and-cloud'),
  modelType: Text(64, 'the AI/IoT task, e.g. anomaly detection, image classification'),
  inputFormat: Text(256, 'what goes in, e.g. 16 temperature readings scaled to 0–1'),
  outputFormat: Text(256, 'what comes out, e.g. softmax over [normal, anomaly]'),
  inputs: Text(1024 * 1024, 'JSON array of tensor specs {name, dtype, shape, labels?}; default: read from the model'),
  outputs: Text(1024 * 1024, 'JSON array of tensor specs (e.g. to add class labels); default: read from the model'),
  model: Type.Union([FileMarker, Type.Array(FileMarker, { minItems: 1, maxItems: 64 })], { description: 'model.json and its weight shards, or one zip of them' }),
  config: Type.Optional(Type.String({ pattern: FILE_MARKER_PATTERN, description: 'config.json: instance defaults (input, rules with actions)' })),
  action: Type.Optional(Type.String({ pattern: FILE_MARKER_PATTERN, description: 'an action script run by `script` actions' }))
}, { additionalProperties: false })

const ListQuery = Type.Object({ owner: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) }, { additionalProperties: false })
const NameParams = Type.Object({ name: Name }, { additionalProperties: false })
const VersionParams = Type.Object({ name: Name, version: Version }, { additionalProperties: false })

const Tensor = Type.Object({ name: Type.String(), dtype: Type.String(), shape: Type.Array(Type.Integer()), labels: Type.Optional(Type.Array(Type.String())) })
export const ModelVersionSchema = Type.Object({
  name: Type.String(),
  version: Type.String(),
  owner: Type.String(),
  createdAt: Type.Integer(),
  digest: Type.String({ description: 'sha256 of the signed bundle: its id in the mesh' }),
  size: Type.Integer(),
  format: Type.String(),
  inputs: Type.Array(Tensor),
  outputs: Type.Array(Tensor),
  config: Type.Record(Type.String(), Type.Unknown()),
  action: Type.Union([Type.String(), Type.Null()]),
  files: Type.Array(Type.String()),
  metadata: Type.Object({
    description: Type.Optional(Type.String()),
    deploymentType: Type.Optional(Type.String()),
    modelType: Type.Optional(Type.String()),
    inputFormat: Type.Optional(Type.String()),
    outputFormat: Type.Optional(Type.String())
  })
}, { $id: 'ModelVersion' })

const ModelSummary = Type.Object({
  name: Type.String(),
  versions: Type.Array(Type.String(), { description: 'newest first' }),
  latest: Type.Ref('ModelVersion')
})

const Specs = Type.Array(TensorSpecSchema, { minItems: 1, maxItems: 32 })
const validateSpecs = compile(Specs)
const MAX_CONFIG_BYTES = 1024 * 1024

function parseSpecs (text: string | undefined, field: 'inputs' | 'outputs'): TensorSpec[] | undefined {
  if (text == null) return undefined
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err: any) {
    throw new BadRequestError(`body.${field}: is not JSON: ${err.message}`, { field: `body.${field}` })
  }
  if (!validateSpecs(value)) {
    const { field: where, message } = describeError(`body.${field}`, validateSpecs.errors)
    throw new BadRequestError(message, { field: where })
  }
  return value
}

async function readConfig (request: FastifyRequest, marker: string | undefined): Promise<Record<string, unknown>> {
  if (marker == null) return {}
  const file = uploadedFile(request, marker, 'config')
  if (file.size > MAX_CONFIG_BYTES) throw new BadRequestError(`body.config: ${file.size} bytes; a config.json is at most ${MAX_CONFIG_BYTES}`, { field: 'body.config' })
  let config: unknown
  try {
    config = JSON.parse(await readFile(file.path, 'utf8'))
  } catch (err: any) {
    throw new BadRequestError(`body.config: ${file.filename} is not JSON: ${err.message}`, { field: 'body.config' })
  }
  // the runtime's own schema: an error names the field, e.g. body.config.rules[0].actions[0].to
  parseInstanceSpec(config, 'body.config')
  return config as Record<string, unknown>
}

/** The name under which uploads are stored: the user, or the API token. */
export function ownerOf (request: FastifyRequest): string {
  const p = principalOf(request)
  return p.kind === 'user' ? p.name : `token.${(p.id ?? p.name).replace(/[^A-Za-z0-9._-]/g, '_')}`
}

const tags = ['models']
const config = { service: 'models' as const }

/**
 * The model repository: upload a TensorFlow.js model with its config and
 * action script; it is stored per user and version, built into a bundle,
 * checked by loading it with TF.js, signed with the fleet key and
 * published into the mesh through the embedded agent.
 */
export async function modelRoutes (app: FastifyInstance, { ctx }: { ctx: CoordinatorContext }): Promise<void> {
  const models = ctx.models
  if (models == null) return
  const hooks = await registerUploads(app, { stagingDir: models.stagingDir, maxBytes: models.maxUploadBytes })

  app.post<{ Body: Static<typeof UploadBody> }>('/api/v1/models', {
    config,
    onRequest: hooks.onRequest,
    preValidation: hooks.preValidation,
    schema: {
      tags,
      summary: 'Upload a model version (multipart/form-data): TF.js model files or a zip, config.json, action script, descriptive fields',
      description: 'The model is loaded and run once with TensorFlow.js, built into a bundle signed with the fleet key, stored, and published into the mesh, where deployments find it by name and version. 409 when the name and version exist; 413 past the upload limit.',
      consumes: ['multipart/form-data'],
      querystring: NoQuery,
      body: UploadBody,
      response: { 201: Type.Ref('ModelVersion'), ...errorResponses(400, 401, 403, 409, 413, 415, 422) }
    }
  }, async (request, reply) => {
    const body = request.body
    const metadata: ModelMetadata = {}
    for (const k of ['description', 'deploymentType', 'modelType', 'inputFormat', 'outputFormat'] as const) if (body[k] != null) metadata[k] = body[k]
    const inputs = parseSpecs(body.inputs, 'inputs')
    const outputs = parseSpecs(body.outputs, 'outputs')
    const created = await models.add({
      owner: ownerOf(request),
      name: body.name,
      version: body.version,
      metadata,
      model: uploadedFiles(request, body.model, 'model'),
      config: await readConfig(request, body.config),
      ...(body.action == null ? {} : { action: uploadedFile(request, body.action, 'action') }),
      ...(inputs == null ? {} : { inputs }),
      ...(outputs == null ? {} : { outputs }),
      staging: request.staging!
    })
    return await reply.code(201).send(created)
  })

  app.get<{ Querystring: Static<typeof ListQuery> }>('/api/v1/models', {
    config,
    schema: { tags, summary: 'Every model in the repository with its versions', querystring: ListQuery, response: { 200: Type.Object({ models: Type.Array(ModelSummary), count: Type.Integer() }), ...errorResponses(400, 401, 403) } }
  }, async request => {
    const list = summaries(models.list().filter(v => request.query.owner == null || v.owner === request.query.owner))
    return { models: list, count: list.length }
  })

  app.get<{ Params: Static<typeof NameParams> }>('/api/v1/models/:name/versions', {
    config,
    schema: { tags, summary: 'The versions of one model, newest first', params: NameParams, querystring: NoQuery, response: { 200: Type.Object({ name: Type.String(), versions: Type.Array(Type.Ref('ModelVersion')) }), ...errorResponses(400, 401, 403, 404) } }
  }, async request => ({ name: request.params.name, versions: models.versions(request.params.name) }))

  app.get<{ Params: Static<typeof VersionParams> }>('/api/v1/models/:name/versions/:version', {
    config,
    schema: { tags, summary: 'One model version', params: VersionParams, querystring: NoQuery, response: { 200: Type.Ref('ModelVersion'), ...errorResponses(400, 401, 403, 404) } }
  }, async request => models.get(request.params.name, request.params.version))

  app.get<{ Params: Static<typeof VersionParams> }>('/api/v1/models/:name/versions/:version/bundle', {
    config,
    schema: { tags, summary: 'Download the signed bundle zip of a version', params: VersionParams, querystring: NoQuery, response: { 200: { description: 'application/zip', type: 'string', format: 'binary' }, ...errorResponses(400, 401, 403, 404) } }
  }, async (request, reply) => {
    const v = models.get(request.params.name, request.params.version)
    return await reply
      .type('application/zip')
      .header('content-length', String(v.size))
      .header('content-disposition', `attachment; filename="${v.name}-${v.version}.zip"`)
      .header('x-bundle-digest', v.digest)
      .send(createReadStream(models.bundlePath(v)))
  })
}

/** One entry per model name: its versions, newest first, and the latest in full. */
export function summaries (versions: ModelVersion[]): Array<{ name: string, versions: string[], latest: ModelVersion }> {
  const byName = new Map<string, ModelVersion[]>()
  for (const v of versions) {
    const list = byName.get(v.name) ?? []
    list.push(v)
    byName.set(v.name, list)
  }
  return [...byName].map(([name, list]) => {
    const sorted = list.sort((a, b) => b.createdAt - a.createdAt)
    return { name, versions: sorted.map(v => v.version), latest: sorted[0]! }
  })
}
