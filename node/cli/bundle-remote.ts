import { commonJs } from '../commonjs.ts'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { formatBytes } from './bundle.ts'
import { AGENT_OPTIONS, AgentClient } from './agent-client.ts'
import { requireArg } from './args.ts'
import { UsageError } from './errors.ts'
import type { BundleView } from '../bundles/service.ts'

export async function publishCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { ...AGENT_OPTIONS, json: { type: 'boolean' } } })
  const file = resolve(requireArg(positionals[0], 'FILE'))
  const client = await AgentClient.from(values)
  const api = client.api
  const size = (await stat(file)).size
  const { status, body } = await client.request<BundleView & { signer: string }>('POST', '/v1/bundles', {
    headers: { 'content-type': 'application/zip', 'content-length': String(size) },
    body: createReadStream(file) as unknown as ReadableStream,
    timeoutMs: 600_000
  })
  if (values.json === true) {
    console.log(JSON.stringify(body))
    return
  }
  console.log(`${status === 201 ? 'published' : 'already held'} ${body.name ?? '?'}@${body.version ?? '?'} signed by ${body.signer}`)
  console.log(`  digest ${body.digest}`)
  console.log(`  size   ${formatBytes(body.size)}; advertised to the mesh by ${api}`)
}

/** One line of progress: bytes, rate, providers. */
function describe (view: BundleView): { done: number, total: number, rate: number, providers: number } {
  const t = view.transfer
  return {
    done: t?.bytesHave ?? (view.state === 'complete' ? view.size : 0),
    total: t?.size ?? view.size,
    rate: t?.rateBps ?? 0,
    providers: t?.providers.filter(p => p.state === 'active').length ?? 0
  }
}

export async function pullCommand (argv: string[]): Promise<void> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...AGENT_OPTIONS, 'no-wait': { type: 'boolean' }, json: { type: 'boolean' }, interval: { type: 'string' } }
  })
  const digest = requireArg(positionals[0], 'DIGEST')
  if (!/^[0-9a-f]{64}$/.test(digest)) throw new UsageError(`DIGEST: "${digest}" is not a sha256 (64 lowercase hex digits)`)
  const client = await AgentClient.from(values)
  const api = client.api
  const started = Date.now()
  let { body: view } = await client.request<BundleView>('POST', `/v1/bundles/${digest}/pull`)
  if (values['no-wait'] === true) {
    console.log(values.json === true ? JSON.stringify(view) : `pull of ${digest} started on ${api} (${view.state})`)
    return
  }
  const tty = process.stdout.isTTY && values.json !== true
  const every = Number(values.interval ?? (tty ? 200 : 1000))
  let bar: import('cli-progress').SingleBar | undefined
  if (tty) {
    const { SingleBar, Presets } = commonJs(await import('cli-progress'))
    bar = new SingleBar({
      format: '{bar} {percentage}% | {done} / {size} | {rate}/s | {providers} provider(s) | {state}',
      hideCursor: true
    }, Presets.shades_classic)
    bar.start(1, 0, { done: '0 B', size: '?', rate: '0 B', providers: 0, state: view.state })
  }
  let lastLine = 0
  while (view.state !== 'complete' && view.transfer?.state !== 'failed') {
    await new Promise(resolve => setTimeout(resolve, every))
    view = (await client.request<BundleView>('GET', `/v1/bundles/${digest}`)).body
    const p = describe(view)
    if (bar != null) {
      bar.setTotal(Math.max(1, p.total))
      bar.update(p.done, { done: formatBytes(p.done), size: formatBytes(p.total), rate: formatBytes(p.rate), providers: p.providers, state: view.transfer?.state ?? view.state })
    } else if (values.json !== true && Date.now() - lastLine >= every) {
      lastLine = Date.now()
      const pct = p.total > 0 ? Math.floor(p.done / p.total * 100) : 0
      console.log(`pulling ${digest.slice(0, 12)}: ${formatBytes(p.done)} / ${formatBytes(p.total)} (${pct}%) ${formatBytes(p.rate)}/s from ${p.providers} provider(s), ${view.transfer?.state ?? view.state}`)
    }
  }
  bar?.stop()
  if (view.state !== 'complete') {
    throw new Error(`pull of ${digest} failed: ${view.transfer?.error?.message ?? 'unknown error'}`)
  }
  if (values.json === true) {
    console.log(JSON.stringify(view))
    return
  }
  const t = view.transfer
  const secs = (Date.now() - started) / 1000
  console.log(`pulled ${view.name ?? '?'}@${view.version ?? '?'} (${digest}) — ${formatBytes(view.size)} in ${secs.toFixed(1)} s` +
    (t == null ? '' : `, ${t.fetchedChunks} chunk(s) fetched, ${t.resumedChunks} resumed, ${t.corruptChunks} corrupt`))
}
