/**
 * The transport floor for the inference benchmark: what Node's own HTTP and
 * gRPC stacks cost per predict on this machine with no gatemesh code in the
 * way. A child process (like an agent, so the two share the cores the same
 * way) serves `POST /v1/models/floor:predict` with node:http (the body is
 * read and JSON.parsed, the answer is a fixed `predictions` body) and
 * TF Serving's `PredictionService/Predict` with @grpc/grpc-js from our
 * protos (the request decoded by grpc-js, a fixed output tensor back), both
 * with `predict;dur=0` timing. The benchmark calls it with the same clients
 * and bodies as the agent, so floor and agent overheads compare directly.
 *
 * Run as a script, it serves and prints `{"http":PORT,"grpc":"HOST:PORT"}`.
 */
import { createServer } from 'node:http'
import { Metadata, Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js'
import { servingServices } from '../../protocols/tf-serving/definitions.ts'
import { encodeTensor } from '../../protocols/tf-serving/tensor-proto.ts'
import { start, type TestProcess } from '../helpers/processes.ts'

const OUTPUT = Array.from({ length: 10 }, (_, i) => i / 10)

async function serve (): Promise<void> {
  const answer = JSON.stringify({ predictions: [OUTPUT] })
  const http = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => { chunks.push(c) })
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { instances?: unknown }
      if (!Array.isArray(body.instances)) {
        res.writeHead(400).end()
        return
      }
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'server-timing': 'predict;dur=0.000' }).end(answer)
    })
  })
  await new Promise<void>(resolve => { http.listen(0, '127.0.0.1', resolve) })

  const { PredictionService } = await servingServices()
  const grpc = new Server()
  const output = encodeTensor({ dtype: 'float32', shape: [1, OUTPUT.length], data: Float32Array.from(OUTPUT) })
  grpc.addService(PredictionService.service, {
    Predict: (call: ServerUnaryCall<{ model_spec?: { name?: string } }, unknown>, callback: sendUnaryData<unknown>) => {
      const trailer = new Metadata()
      trailer.set('server-timing', 'predict;dur=0.000')
      callback(null, { outputs: { output }, model_spec: { name: call.request.model_spec?.name ?? '' } }, trailer)
    }
  })
  const grpcPort = await new Promise<number>((resolve, reject) => {
    grpc.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => { err == null ? resolve(port) : reject(err) })
  })
  const address = http.address()
  process.stdout.write(`${JSON.stringify({ http: typeof address === 'object' && address != null ? address.port : 0, grpc: `127.0.0.1:${grpcPort}` })}\n`)
  process.on('SIGTERM', () => { process.exit(0) })
}

/** Start the floor server in its own process; `stop()` it when done. */
export async function startTransportFloor (): Promise<{ httpPort: number, grpcAddress: string, process: TestProcess }> {
  const p = start(process.execPath, [new URL(import.meta.url).pathname], { name: 'transport floor', stdio: ['ignore', 'pipe', 'inherit'] })
  const line = await new Promise<string>((resolve, reject) => {
    let text = ''
    p.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      text += d
      if (text.includes('\n')) resolve(text.split('\n')[0]!)
    })
    p.child.once('exit', code => { reject(new Error(`the transport floor server exited (${String(code)}) before it listened`)) })
  })
  const { http, grpc } = JSON.parse(line) as { http: number, grpc: string }
  return { httpPort: http, grpcAddress: grpc, process: p }
}

if (process.argv[1] === new URL(import.meta.url).pathname) await serve()
