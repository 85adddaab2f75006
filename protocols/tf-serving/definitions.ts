import { commonJs } from '../../node/commonjs.ts'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadSync, type Options } from '@grpc/proto-loader'
import protobuf from 'protobufjs'
import type { GrpcObject, ServiceClientConstructor } from '@grpc/grpc-js'

/**
 * TensorFlow Serving's gRPC API (the subset in ./protos): the service
 * definitions for @grpc/grpc-js, and the message types for encoding by hand.
 * Messages are plain objects with TF's field names (snake_case), enums as
 * their names (`DT_FLOAT`), int64 as decimal strings and bytes as Buffers.
 */
// the app bundle (packaging/app-bundle.ts) copies the .proto files beside its entry
declare const GATEMESH_BUNDLED_PROTOS: string | undefined
export const PROTO_DIR = typeof GATEMESH_BUNDLED_PROTOS === 'string'
  ? join(dirname(process.argv[1] ?? '.'), GATEMESH_BUNDLED_PROTOS) + '/'
  : fileURLToPath(new URL('./protos/', import.meta.url))
export const PROTO_FILES = [
  'tensorflow_serving/apis/prediction_service.proto',
  'tensorflow_serving/apis/model_service.proto'
]

/** How messages look in JavaScript, for both the gRPC server and hand encoding. */
export const MESSAGE_OPTIONS = { keepCase: true, longs: String, enums: String, bytes: Buffer, defaults: true, oneofs: true } as const

let services: { PredictionService: ServiceClientConstructor, ModelService: ServiceClientConstructor } | undefined

/** The two services, as @grpc/grpc-js wants them (`.service` for a server, the constructor for a client). */
export async function servingServices (): Promise<{ PredictionService: ServiceClientConstructor, ModelService: ServiceClientConstructor }> {
  if (services == null) {
    const { loadPackageDefinition } = commonJs(await import('@grpc/grpc-js'))
    const definition = loadSync(PROTO_FILES, { ...MESSAGE_OPTIONS, includeDirs: [PROTO_DIR] } as Options)
    const serving = ((loadPackageDefinition(definition).tensorflow as GrpcObject).serving as GrpcObject)
    services = { PredictionService: serving.PredictionService as ServiceClientConstructor, ModelService: serving.ModelService as ServiceClientConstructor }
  }
  return services
}

let root: protobuf.Root | undefined

/** A message type by its full name, e.g. `tensorflow.TensorProto`, for encoding and decoding by hand. */
export function messageType (name: string): protobuf.Type {
  if (root == null) {
    root = new protobuf.Root()
    root.resolvePath = (_origin, target) => target.startsWith('google/protobuf/') ? target : PROTO_DIR + target
    root.loadSync(PROTO_FILES, { keepCase: true })
  }
  return root.lookupType(name)
}
