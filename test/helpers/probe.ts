/**
 * Runs inside a test network namespace and relays HTTP requests to the
 * agent API on that namespace's loopback: JSON lines in on stdin
 * ({id, method, url, body, headers}), JSON lines out ({id, status, body} or {id, error}).
 */
import { createInterface } from 'node:readline'

const lines = createInterface({ input: process.stdin })
lines.on('line', line => {
  const req = JSON.parse(line) as { id: number, method: string, url: string, body?: unknown, headers?: Record<string, string> }
  fetch(req.url, {
    method: req.method,
    headers: { ...req.headers, ...(req.body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: req.body === undefined ? undefined : JSON.stringify(req.body),
    signal: AbortSignal.timeout(5000)
  }).then(async res => {
    process.stdout.write(JSON.stringify({ id: req.id, status: res.status, body: await res.json().catch(() => null) }) + '\n')
  }, err => {
    process.stdout.write(JSON.stringify({ id: req.id, error: String(err.message ?? err) }) + '\n')
  })
})
