import { Metadata, Server, ServerCredentials, status as Status, type sendUnaryData, type ServerUnaryCall, type UntypedServiceImplementation } from '@grpc/grpc-js'
import { messageType, servingServices } from '../../../protocols/tf-serving/definitions.ts'
import { dataTypeOf, decodeTensor, encodeTensor, type TensorProtoObject } from '../../../protocols/tf-serving/tensor-proto.ts'
import { grpcError } from './errors.ts'
import type { TensorSpec } from '../../../packaging/manifest.ts'
import type { WireTensor } from '../../../packaging/models/tensor.ts'
import { serverTiming, type MetadataAnswer, type TensorAnswer } from '../../runtime/serving.ts'
import { requestIdAt } from '../../../protocols/predict/index.ts'
import type { Logger } from 'pino'

/** What the gRPC API answers from: the local runtime, the mesh behind it. */
export interface ServingBackend {
  /** `requestId`: assigned where the call entered (the client's `idempotency-key` or `x-request-id` metadata, else fresh) */
  predict(model: string, version: string | undefined, inputs: Record<string, WireTensor>, filter: string[], requestId: string): Promise<TensorAnswer>
  metadata(model: string, version: string | undefined): Promise<MetadataAnswer>
  /** TF Serving's status: versions with their state (LOADING, AVAILABLE, …) */
  status(model: string, version: string | undefined): Promise<Array<{ version: string, state: string, error?: string }>>
}

export interface GrpcServingInit {
  /** @default '127.0.0.1' */
  host?: string
  /** 0 picks a free port. */
  port: number
  /** Largest request message. @default DEFAULT_GRPC_MAX_MESSAGE_BYTES */
  maxMessageBytes?: number
  /** TLS certificate and key (PEM); plaintext without. */
  tls?: { cert: Buffer, key: Buffer }
  /** Checks a call's metadata before it is served (the coordinator's bearer tokens); throws to refuse. */
  authorize?: (metadata: Metadata) => Promise<void>
  logger: Pick<Logger, 'info' | 'warn' | 'debug'>
}

/** As the REST predict body limit: a request carries images at most this big. */
export const DEFAULT_GRPC_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
const MAX_CONCURRENT_STREAMS = 256

interface ModelSpecObject { name?: string, version?: { value?: string | number } | null, version_label?: string, version_choice?: string, signature_name?: string }

function versionOf (spec: ModelSpecObject | null | undefined): string | undefined {
  if (spec?.version_choice === 'version' || (spec?.version != null && spec.version_choice == null)) return spec?.version?.value == null ? undefined : String(spec.version.value)
  if (spec?.version_label != null && spec.version_label !== '') return spec.version_label
  return undefined
}

/** A model spec for answers: numeric versions as TF Serving's int64 version, others as a version label. */
function modelSpec (name: string, version: string): Record<string, unknown> {
  return /^\d{1,18}$/.test(version) ? { name, version: { value: version } } : { name, version_label: version }
}

function nameOf (spec: ModelSpecObject | null | undefined): string {
  const name = spec?.name ?? ''
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) throw Object.assign(new Error(`model_spec.name: "${name.slice(0, 64)}" is not a model name`), { code: 'ERR_INVALID_INPUT' })
  return name
}

function shapeProto (shape: number[]): Record<string, unknown> {
  return { dim: shape.map(size => ({ size: String(size) })) }
}

/** GetModelMetadata's `signature_def`: a SignatureDefMap with one `serving_default` signature, packed in an Any. */
export function signatureAny (meta: MetadataAnswer): { type_url: string, value: Buffer } {
  const info = (specs: TensorSpec[]): Record<string, unknown> => Object.fromEntries(specs.map(s => [s.name, { name: s.name, dtype: dataTypeOf(s.dtype), tensor_shape: shapeProto(s.shape) }]))
  const type = messageType('tensorflow.serving.SignatureDefMap')
  const value = type.encode(type.fromObject({ signature_def: { serving_default: { inputs: info(meta.inputs), outputs: info(meta.outputs), method_name: 'tensorflow/serving/predict' } } })).finish()
  return { type_url: 'type.googleapis.com/tensorflow.serving.SignatureDefMap', value: Buffer.from(value) }
}

const STATE_CODES = new Set(['UNKNOWN', 'START', 'LOADING', 'AVAILABLE', 'UNLOADING', 'END'])

/**
 * TensorFlow Serving's gRPC API: PredictionService/Predict and
 * GetModelMetadata, ModelService/GetModelStatus (@grpc/grpc-js). Tensors
 * come in either TensorProto form and go out as TensorFlow writes them;
 * every error maps to a gRPC status from the same catalog as REST.
 */
export class GrpcServing {
  readonly #backend: ServingBackend
  readonly #init: GrpcServingInit
  #server?: Server
  #address = ''

  constructor (backend: ServingBackend, init: GrpcServingInit) {
    this.#backend = backend
    this.#init = init
  }

  /** `host:port` it listens on, once started. */
  get address (): string {
    return this.#address
  }

  async start (): Promise<string> {
    const { PredictionService, ModelService } = await servingServices()
    const max = this.#init.maxMessageBytes ?? DEFAULT_GRPC_MAX_MESSAGE_BYTES
    const server = new Server({ 'grpc.max_receive_message_length': max, 'grpc.max_send_message_length': 4 * max, 'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS })
    server.addService(PredictionService.service, {
      Predict: this.#unary(async (req: { model_spec?: ModelSpecObject, inputs?: Record<string, TensorProtoObject>, output_filter?: string[] }, trailer, metadata) => {
        const name = nameOf(req.model_spec)
        const key = metadata.get('idempotency-key')
        const requestId = key.length > 0 ? requestIdAt(key[0], 'metadata.idempotency-key') : requestIdAt(metadata.get('x-request-id')[0], 'metadata.x-request-id')
        trailer.set('x-request-id', requestId)
        const inputs: Record<string, WireTensor> = {}
        for (const [key, proto] of Object.entries(req.inputs ?? {})) inputs[key] = decodeTensor(proto, `inputs.${key}`)
        const answer = await this.#backend.predict(name, versionOf(req.model_spec), inputs, req.output_filter ?? [], requestId)
        if (answer.servedMs != null) trailer.set('server-timing', serverTiming(answer.servedMs))
        return { outputs: Object.fromEntries(Object.entries(answer.outputs).map(([k, t]) => [k, encodeTensor(t)])), model_spec: modelSpec(answer.model, answer.version) }
      }),
      GetModelMetadata: this.#unary(async (req: { model_spec?: ModelSpecObject, metadata_field?: string[] }) => {
        const name = nameOf(req.model_spec)
        const fields = req.metadata_field ?? []
        const bad = fields.findIndex(f => f !== 'signature_def')
        if (bad >= 0) throw Object.assign(new Error(`metadata_field[${bad}]: "${fields[bad]!.slice(0, 64)}" is not served; only "signature_def"`), { code: 'ERR_INVALID_INPUT' })
        const meta = await this.#backend.metadata(name, versionOf(req.model_spec))
        return { model_spec: modelSpec(meta.model, meta.version), metadata: { signature_def: signatureAny(meta) } }
      })
    } satisfies UntypedServiceImplementation)
    server.addService(ModelService.service, {
      GetModelStatus: this.#unary(async (req: { model_spec?: ModelSpecObject }) => {
        const name = nameOf(req.model_spec)
        const versions = await this.#backend.status(name, versionOf(req.model_spec))
        return {
          model_version_status: versions.map(v => ({
            // TF Serving versions are numbers; a version that is not one reads 0 (its label is in GetModelMetadata)
            version: /^\d{1,18}$/.test(v.version) ? v.version : '0',
            state: STATE_CODES.has(v.state) ? v.state : 'UNKNOWN',
            status: { error_code: v.error == null ? 'OK' : 'UNKNOWN', error_message: v.error ?? '' }
          }))
        }
      })
    } satisfies UntypedServiceImplementation)
    const host = this.#init.host ?? '127.0.0.1'
    const credentials = this.#init.tls == null ? ServerCredentials.createInsecure() : ServerCredentials.createSsl(null, [{ cert_chain: this.#init.tls.cert, private_key: this.#init.tls.key }], false)
    const target = host.includes(':') ? `[${host}]:${this.#init.port}` : `${host}:${this.#init.port}`
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(target, credentials, (err, p) => { err == null ? resolve(p) : reject(err) })
    })
    this.#server = server
    this.#address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
    this.#init.logger.info({ grpc: this.#address, tls: this.#init.tls != null }, 'gRPC API (TensorFlow Serving) listening')
    return this.#address
  }

  async stop (): Promise<void> {
    const server = this.#server
    if (server == null) return
    this.#server = undefined
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => { server.forceShutdown(); resolve() }, 2000)
      server.tryShutdown(() => { clearTimeout(timer); resolve() })
    })
  }

  /** A unary handler; `trailer` is sent with a successful answer. */
  #unary<Req, Res> (handle: (req: Req, trailer: Metadata, metadata: Metadata) => Promise<Res>): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
    return (call, callback) => {
      const trailer = new Metadata()
      const run = async (): Promise<Res> => {
        await this.#init.authorize?.(call.metadata)
        return await handle(call.request, trailer, call.metadata)
      }
      run().then(res => { callback(null, res, trailer) }, err => {
        const { code, details, retryAfterSec } = grpcError(err)
        if (code === Status.INTERNAL) this.#init.logger.warn({ err: (err as Error).message }, 'gRPC call failed')
        const metadata = new Metadata()
        if (retryAfterSec != null) metadata.set('retry-after', String(retryAfterSec))
        callback({ code, details, metadata }, null)
      })
    }
  }
}
