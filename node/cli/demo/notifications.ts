import { createServer, type Server } from 'node:http'

/** One notification as the demo shows it. */
export interface DemoNotification {
  at: number
  node: string
  sensor: string
  klass: string
  score: number
  peak?: number
}

/**
 * The demo's notification receiver: a webhook on 127.0.0.1 that the
 * deployment's rule posts to (through each gateway's durable outbox). It
 * dedupes by the outbox's idempotency key, as a real receiver would.
 */
export class NotificationSink {
  readonly received: DemoNotification[] = []
  readonly #seen = new Set<string>()
  readonly #server: Server
  #onNotify: (n: DemoNotification) => void = () => {}
  url = ''

  constructor () {
    this.#server = createServer((req, res) => {
      let body = ''
      req.on('data', d => { body += String(d) })
      req.on('end', () => {
        const key = String(req.headers['idempotency-key'] ?? '')
        res.writeHead(204).end()
        if (key !== '' && this.#seen.has(key)) return
        this.#seen.add(key)
        try {
          const e = JSON.parse(body) as { node?: string, sensor?: string, class?: string, score?: number, window?: { max?: number } }
          const n: DemoNotification = { at: Date.now(), node: e.node ?? '?', sensor: e.sensor ?? '?', klass: e.class ?? '?', score: e.score ?? 0, ...(e.window?.max == null ? {} : { peak: e.window.max }) }
          this.received.push(n)
          this.#onNotify(n)
        } catch {}
      })
    })
  }

  onNotify (fn: (n: DemoNotification) => void): void {
    this.#onNotify = fn
  }

  async start (): Promise<string> {
    await new Promise<void>(resolve => this.#server.listen(0, '127.0.0.1', resolve))
    const address = this.#server.address() as { port: number }
    this.url = `http://127.0.0.1:${address.port}/notify`
    return this.url
  }

  async stop (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>(resolve => this.#server.close(() => { resolve() }))
  }
}
