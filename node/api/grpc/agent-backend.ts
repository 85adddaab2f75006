import { Type } from '@sinclair/typebox'
import { TensorSpecSchema } from '../../../packaging/manifest.ts'
import { compile } from '../../../protocols/schema.ts'
import { ModelNotFoundError } from '../../runtime/errors.ts'
import { metadataLocal, predictTensorsLocal, tensorsFromJson, tensorsToJson, type MetadataAnswer, type TensorAnswer } from '../../runtime/serving.ts'
import { RelayedError } from './errors.ts'
import type { ServingBackend } from './server.ts'
import type { Runtime } from '../../runtime/runtime.ts'
import type { PredictRouter } from '../../scheduler/router.ts'

export interface AgentBackendComponents {
  runtime: Pick<Runtime, 'get' | 'has'>
  /** the mesh: models this node does not run */
  router?: Pick<PredictRouter, 'predict' | 'status'>
}

// a signature from another node is data: checked before it is encoded
const validateMetadata = compile(Type.Object({
  model: Type.String({ maxLength: 64 }),
  version: Type.String({ maxLength: 64 }),
  format: Type.String({ maxLength: 32 }),
  inputs: Type.Array(TensorSpecSchema, { maxItems: 32 }),
  outputs: Type.Array(TensorSpecSchema, { maxItems: 32 })
}, { additionalProperties: false }))

/**
 * gRPC answered like REST: by the local instance when this node runs the
 * model, else forwarded over the mesh to a replica (the same predict
 * protocol, asking for typed tensors or the signature instead of JSON rows).
 */
export function agentBackend (c: AgentBackendComponents): ServingBackend {
  const local = (name: string): boolean => c.runtime.has(name) || c.router == null
  return {
    async predict (name, version, inputs, filter, requestId): Promise<TensorAnswer> {
      if (local(name)) return await predictTensorsLocal(c.runtime, name, version, inputs, filter, requestId)
      const reply = await c.router!.predict(name, version, { inputs: tensorsToJson(inputs), output_filter: filter }, 'tensors', requestId)
      if (reply.status !== 200) throw new RelayedError(reply.status, reply.body)
      const body = reply.body as { model?: unknown, version?: unknown, outputs?: unknown }
      return { model: String(body.model ?? name), version: String(body.version ?? ''), outputs: tensorsFromJson(body.outputs, 'outputs') }
    },
    async metadata (name, version): Promise<MetadataAnswer> {
      if (local(name)) return metadataLocal(c.runtime, name, version)
      const reply = await c.router!.predict(name, version, null, 'metadata')
      if (reply.status !== 200) throw new RelayedError(reply.status, reply.body)
      if (!validateMetadata(reply.body)) throw new RelayedError(502, { message: `the replica of ${name} sent a malformed signature` })
      return reply.body
    },
    async status (name, version) {
      if (local(name)) {
        const instance = c.runtime.get(name)
        if (version != null && instance.version !== version) throw new ModelNotFoundError(`model ${name} runs here in version ${instance.version}, not ${version}`)
        return instance.status().model_version_status.map(v => ({ version: v.version, state: v.state, ...(v.status.error_message === '' ? {} : { error: v.status.error_message }) }))
      }
      const status = c.router!.status(name)
      const versions = status?.model_version_status.filter(v => version == null || v.version === version) ?? []
      if (versions.length === 0) throw new ModelNotFoundError(`model ${name}${version == null ? '' : ` version ${version}`} is not deployed anywhere in the mesh`)
      return versions.map(v => ({ version: v.version, state: v.state }))
    }
  }
}
