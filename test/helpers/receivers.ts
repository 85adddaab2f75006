import { createServer, type IncomingMessage, type Server } from 'node:http'
import mqtt, { type MqttClient } from 'mqtt'
import { SMTPServer } from 'smtp-server'
import { freePort } from './ports.ts'

/** One message as a receiver saw it. `key` is the idempotency key it deduplicates by. */
export interface Received {
  key: string
  at: number
  [field: string]: unknown
}

/** What every receiver records: everything that arrived, and what is left after dropping repeats. */
class Log {
  readonly all: Received[] = []
  readonly #keys = new Set<string>()
  readonly unique: Received[] = []

  add (r: Received): boolean {
    this.all.push(r)
    if (this.#keys.has(r.key)) return false
    this.#keys.add(r.key)
    this.unique.push(r)
    return true
  }
}

function decodeQuotedPrintable (text: string): string {
  const bytes = Buffer.from(text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1')
  return bytes.toString('utf8')
}

/** A real SMTP server (smtp-server) that deduplicates by Message-ID. Stop and resume keep the port. */
export class MailSink extends Log {
  readonly port: number
  #server?: SMTPServer

  private constructor (port: number) {
    super()
    this.port = port
  }

  static async start (): Promise<MailSink> {
    const sink = new MailSink(await freePort())
    await sink.resume()
    return sink
  }

  async resume (): Promise<void> {
    this.#server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData: (stream, session, callback) => {
        let raw = ''
        stream.setEncoding('utf8')
        stream.on('data', (c: string) => { raw += c })
        stream.on('end', () => {
          const header = (name: string): string => new RegExp(`^${name}:\\s*(.*(?:\\r?\\n[ \\t].*)*)`, 'im').exec(raw)?.[1]?.replace(/\r?\n[ \t]+/g, ' ').trim() ?? ''
          let body = raw.split(/\r?\n\r?\n/).slice(1).join('\n\n')
          if (/quoted-printable/i.test(header('Content-Transfer-Encoding'))) body = decodeQuotedPrintable(body)
          this.add({ key: header('Message-ID'), at: Date.now(), to: session.envelope.rcptTo.map(r => r.address), subject: header('Subject'), body })
          callback()
        })
      }
    })
    const server = this.#server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, '127.0.0.1', () => { resolve() })
    })
  }

  async stop (): Promise<void> {
    const server = this.#server
    this.#server = undefined
    if (server != null) await new Promise<void>(resolve => { server.close(() => { resolve() }) })
  }
}

/**
 * A local HTTP server standing in for a webhook receiver and a Twilio-style
 * SMS gateway (`POST /sms`: form fields To, From, Body, basic auth). It
 * deduplicates by the Idempotency-Key header, as such gateways do, and can
 * be told to fail the next requests.
 */
export class HttpSink {
  readonly port: number
  readonly sms = new Log()
  readonly hooks = new Log()
  /** answer the next N requests with this status instead of 201 */
  failNext: { count: number, status: number } = { count: 0, status: 500 }
  readonly #auth: string
  #server?: Server

  private constructor (port: number, auth: { user: string, password: string }) {
    this.port = port
    this.#auth = 'Basic ' + Buffer.from(`${auth.user}:${auth.password}`).toString('base64')
  }

  static async start (auth = { user: 'AC123', password: 'secret-token' }): Promise<HttpSink> {
    const sink = new HttpSink(await freePort(), auth)
    await sink.resume()
    return sink
  }

  get url (): string {
    return `http://127.0.0.1:${this.port}`
  }

  async resume (): Promise<void> {
    this.#server = createServer((req, res) => { this.#handle(req).then(([status, body]) => { res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }, () => { res.writeHead(500).end() }) })
    const server = this.#server
    await new Promise<void>(resolve => server.listen(this.port, '127.0.0.1', resolve))
  }

  async stop (): Promise<void> {
    const server = this.#server
    this.#server = undefined
    server?.closeAllConnections()
    if (server != null) await new Promise<void>(resolve => { server.close(() => { resolve() }) })
  }

  async #handle (req: IncomingMessage): Promise<[number, unknown]> {
    let text = ''
    for await (const chunk of req) text += chunk as string
    if (this.failNext.count > 0) {
      this.failNext.count--
      return [this.failNext.status, { message: 'failing on purpose' }]
    }
    const key = String(req.headers['idempotency-key'] ?? '')
    if (req.url === '/sms') {
      if (req.headers.authorization !== this.#auth) return [401, { message: 'bad credentials' }]
      if (req.headers['content-type'] !== 'application/x-www-form-urlencoded') return [415, { message: 'form expected' }]
      const form = new URLSearchParams(text)
      if (form.get('To') == null || form.get('From') == null || form.get('Body') == null) return [400, { message: 'To, From and Body are required' }]
      const fresh = this.sms.add({ key, at: Date.now(), to: form.get('To'), from: form.get('From'), body: form.get('Body') })
      return [201, { sid: `SM${key.replaceAll('-', '').slice(0, 32)}`, status: fresh ? 'queued' : 'duplicate' }]
    }
    this.hooks.add({ key, at: Date.now(), path: req.url, contentType: req.headers['content-type'], body: text })
    return [201, { ok: true }]
  }
}

/** An MQTT 5 subscriber with a persistent session, deduplicating by the `idempotency-key` user property. */
export class MqttSink extends Log {
  readonly #client: MqttClient

  private constructor (client: MqttClient) {
    super()
    this.#client = client
  }

  static async start (url: string, topic: string): Promise<MqttSink> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, clean: false, clientId: `sink-${Math.random().toString(16).slice(2, 8)}`, reconnectPeriod: 200, properties: { sessionExpiryInterval: 3600 } })
    const sink = new MqttSink(client)
    client.on('message', (t, payload, packet) => {
      const key = packet.properties?.userProperties?.['idempotency-key']
      sink.add({ key: String(Array.isArray(key) ? key[0] : key ?? ''), at: Date.now(), topic: t, payload: payload.toString('utf8') })
    })
    await client.subscribeAsync(topic, { qos: 1 })
    return sink
  }

  get connected (): boolean {
    return this.#client.connected
  }

  async close (): Promise<void> {
    await this.#client.endAsync(true)
  }
}
