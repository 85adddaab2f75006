/**
 * The deduping receivers of the chaos run, as one process inside the
 * receivers' network namespace: a webhook receiver (HTTP) and an MQTT 5
 * subscriber with a persistent session on the broker beside it. Every
 * delivery is written to stdout as one JSON line, with the idempotency key
 * it carried, so the run counts losses and repeats exactly:
 *
 *   {"ch":"http"|"mqtt","key":"...","body":"...","at":ms}
 *
 * stdin takes `down` (the webhook receiver closes its port and every open
 * connection: a receiver outage) and `up` (it listens again).
 *
 *   node test/chaos/sink.ts --host ADDR --port N [--mqtt URL --topic T]
 */
import { createServer, type Server } from 'node:http'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import mqtt from 'mqtt'

const { values } = parseArgs({ options: { host: { type: 'string' }, port: { type: 'string' }, mqtt: { type: 'string' }, topic: { type: 'string' } } })
const host = values.host ?? '127.0.0.1'
const port = Number(values.port ?? 8080)
const emit = (line: Record<string, unknown>): void => { process.stdout.write(JSON.stringify({ ...line, at: Date.now() }) + '\n') }

let server: Server | undefined
async function up (): Promise<void> {
  if (server != null) return
  const s = server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8').on('data', (d: string) => { body += d }).on('end', () => {
      // recorded before the answer: a receiver that took it and then lost the connection has still seen it
      emit({ ch: 'http', key: String(req.headers['idempotency-key'] ?? ''), body })
      res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  })
  await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, host, resolve) })
  emit({ ch: 'control', state: 'up' })
}
async function down (): Promise<void> {
  const s = server
  server = undefined
  if (s == null) return
  s.closeAllConnections()
  await new Promise<void>(resolve => { s.close(() => { resolve() }) })
  emit({ ch: 'control', state: 'down' })
}

if (values.mqtt != null) {
  // a persistent session: what the broker queued for us while we were away arrives on reconnect
  const client = mqtt.connect(values.mqtt, { protocolVersion: 5, clean: false, clientId: 'chaos-sink', reconnectPeriod: 300, properties: { sessionExpiryInterval: 3600 } })
  client.on('connect', () => {
    client.subscribe(values.topic ?? '#', { qos: 1 })
    emit({ ch: 'control', state: 'mqtt-connected' })
  })
  client.on('error', () => {})
  client.on('message', (topic, payload, packet) => {
    const key = packet.properties?.userProperties?.['idempotency-key']
    emit({ ch: 'mqtt', key: String(Array.isArray(key) ? key[0] : key ?? ''), topic, body: payload.toString('utf8') })
  })
}

createInterface({ input: process.stdin }).on('line', line => {
  const cmd = line.trim()
  if (cmd === 'down') down().catch(err => { emit({ ch: 'control', error: String(err) }) })
  if (cmd === 'up') up().catch(err => { emit({ ch: 'control', error: String(err) }) })
}).on('close', () => { process.exit(0) })
await up()
