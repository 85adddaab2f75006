import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js'
import { MESSAGE_OPTIONS, messageType, servingServices } from '../../protocols/tf-serving/definitions.ts'
import { decodeTensor, encodeTensor, type TensorProtoObject } from '../../protocols/tf-serving/tensor-proto.ts'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { RUNTIME_FILE } from '../../node/agent.ts'
import { waitFor } from './cluster.ts'
import type { WireTensor } from '../../packaging/models/tensor.ts'

/** A TF Serving gRPC client, as a user's client generated from TF Serving's protos would call. */
export interface ServingClient {
  predict(request: Record<string, unknown>): Promise<any>
  /** Predict, with the server's in-process time from its `server-timing` trailer (undefined when it sent none). */
  predictTimed(request: Record<string, unknown>): Promise<{ response: any, servedMs: number | undefined }>
  metadata(request: Record<string, unknown>): Promise<any>
  status(request: Record<string, unknown>): Promise<any>
  close(): void
}

export async function servingClient (address: string, options: { token?: string } = {}): Promise<ServingClient> {
  const { PredictionService, ModelService } = await servingServices()
  const creds = credentials.createInsecure()
  const prediction = new PredictionService(address, creds) as Client & Record<string, Function>
  const model = new ModelService(address, creds) as Client & Record<string, Function>
  const call = async (client: Record<string, Function>, method: string, request: Record<string, unknown>): Promise<any> => await new Promise((resolve, reject) => {
    const metadata = new Metadata()
    if (options.token != null) metadata.set('authorization', `Bearer ${options.token}`)
    client[method]!.call(client, request, metadata, { deadline: Date.now() + 30_000 }, (err: ServiceError | null, res: unknown) => { err == null ? resolve(res) : reject(err) })
  })
  const predictTimed = async (request: Record<string, unknown>): Promise<{ response: any, servedMs: number | undefined }> => await new Promise((resolve, reject) => {
    let response: unknown
    const metadata = new Metadata()
    if (options.token != null) metadata.set('authorization', `Bearer ${options.token}`)
    const unary = prediction.Predict!.call(prediction, request, metadata, { deadline: Date.now() + 30_000 }, (err: ServiceError | null, res: unknown) => {
      if (err != null) reject(err)
      else response = res
    }) as NodeJS.EventEmitter
    // the trailers come with the status, after the response
    unary.on('status', (s: { code: number, metadata: Metadata }) => {
      if (s.code === 0) resolve({ response, servedMs: servedMsOf(s.metadata.get('server-timing')[0]) })
    })
  })
  return {
    predict: async r => await call(prediction, 'Predict', r),
    predictTimed,
    metadata: async r => await call(prediction, 'GetModelMetadata', r),
    status: async r => await call(model, 'GetModelStatus', r),
    close: () => { prediction.close(); model.close() }
  }
}

/** A float32 tensor proto (tensor_content) of nested arrays. */
export function floatTensor (nested: unknown[]): TensorProtoObject {
  const shape: number[] = []
  let probe: unknown = nested
  while (Array.isArray(probe)) {
    shape.push(probe.length)
    probe = probe[0]
  }
  return encodeTensor({ dtype: 'float32', shape, data: Float32Array.from((nested as unknown[]).flat(shape.length) as number[]) })
}

/** A response tensor as nested rows of numbers. */
export function rowsOf (proto: TensorProtoObject): number[][] {
  const t: WireTensor = decodeTensor(proto, 'output')
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1)
  return Array.from({ length: t.shape[0]! }, (_, i) => Array.from((t.data as Float32Array).subarray(i * per, (i + 1) * per)))
}

/** A TensorProto message's bytes, as TensorFlow would serialise the object. */
export function tensorBytes (proto: TensorProtoObject): Buffer {
  const type = messageType('tensorflow.TensorProto')
  const minimal: TensorProtoObject = { dtype: proto.dtype, tensor_shape: { dim: (proto.tensor_shape?.dim ?? []).map(d => ({ size: String(d.size) })) } }
  if (proto.tensor_content != null && proto.tensor_content.length > 0) minimal.tensor_content = proto.tensor_content
  return Buffer.from(type.encode(type.fromObject(minimal)).finish())
}

/** A TensorProto message read from bytes (a fixture), as the server's decoder sees it. */
export function readTensorProto (bytes: Uint8Array): TensorProtoObject {
  const type = messageType('tensorflow.TensorProto')
  return type.toObject(type.decode(bytes), MESSAGE_OPTIONS as any) as TensorProtoObject
}

/** A SignatureDefMap packed in GetModelMetadata's Any. */
export function signatureOf (any: { type_url: string, value: Uint8Array }): any {
  const type = messageType('tensorflow.serving.SignatureDefMap')
  return type.toObject(type.decode(any.value), MESSAGE_OPTIONS as any)
}

/** An agent's gRPC address, once it listens (the agent starts gRPC after its HTTP API and names it in agent.json). */
export async function agentGrpc (dir: string, timeoutMs = 60_000): Promise<string> {
  return await waitFor(async () => (JSON.parse(await readFile(join(dir, RUNTIME_FILE), 'utf8')) as { grpc?: string }).grpc, 'the agent\'s gRPC API', timeoutMs, 200)
}

/** The `dur` of a `predict;dur=…` Server-Timing value, in ms. */
export function servedMsOf (value: unknown): number | undefined {
  const m = /(?:^|,)\s*predict;dur=([0-9.]+)/.exec(String(value ?? ''))
  return m == null ? undefined : Number(m[1])
}
