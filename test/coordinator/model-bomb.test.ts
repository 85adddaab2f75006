import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { Cluster, sleep, waitFor } from '../helpers/cluster.ts'
import { CoordinatorProcess } from '../helpers/coordinator-process.ts'

/**
 * Issue 14, "a developer uploads a 490-byte model.json": an UpSampling2D
 * that asks TensorFlow.js for gigabytes when the model check runs it. The
 * check runs in a child process with an RSS watchdog, so the coordinator
 * refuses the model, keeps answering, and keeps its own memory.
 */

// TF.js layers: 16×16 → ×1024 → ×2 upsampling, 4 GiB of float32 at batch 1, in 423 bytes
const BOMB = JSON.stringify({
  format: 'layers-model',
  modelTopology: {
    class_name: 'Sequential',
    config: {
      name: 's',
      layers: [
        { class_name: 'InputLayer', config: { batch_input_shape: [null, 16, 16, 1], dtype: 'float32', name: 'x' } },
        { class_name: 'UpSampling2D', config: { size: [1024, 1024], name: 'u', data_format: 'channels_last' } },
        { class_name: 'UpSampling2D', config: { size: [2, 2], name: 'v', data_format: 'channels_last' } }
      ]
    }
  },
  weightsManifest: []
})
const RSS_LIMIT = 300 * 1024 * 1024

async function rssOf (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)![1]) * 1024
}

const cluster = await Cluster.create()
const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
t.teardown(async () => {
  await coordinator.stop()
  await cluster.close()
})
await coordinator.start()
const token = await coordinator.login('admin', coordinator.printedPassword()!)

t.test('a TF.js memory bomb is refused; the coordinator answers throughout and keeps its memory', async t => {
  const pid = coordinator.child!.pid!
  const before = await rssOf(pid)
  t.ok(before < RSS_LIMIT, `the coordinator starts under 300 MB (${Math.round(before / 1e6)} MB)`)

  // /healthz polled all along: every answer must come, none may fail
  let polling = true
  const latencies: number[] = []
  const failures: string[] = []
  const poller = (async () => {
    while (polling) {
      const start = performance.now()
      try {
        const res = await fetch(`${coordinator.url}/healthz`, { signal: AbortSignal.timeout(3000) })
        if (res.status !== 200) failures.push(`HTTP ${res.status}`)
        await res.arrayBuffer()
      } catch (err: any) {
        failures.push(err.message)
      }
      latencies.push(performance.now() - start)
      await sleep(100)
    }
  })()

  const form = new FormData()
  form.set('name', 'upsample')
  form.set('version', '1')
  form.append('model', new Blob([BOMB]), 'model.json')
  const res = await fetch(`${coordinator.url}/api/v1/models`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(300_000) })
  const body = await res.json() as { code: string, message: string }
  polling = false
  await poller

  t.equal(res.status, 422, `refused: ${JSON.stringify(body)}`)
  t.equal(body.code, 'ERR_MODEL_CHECK_LIMIT')
  t.match(body.message, /model\.json: loading and running the tfjs-layers model took more than \d+ MiB of memory; refused|model check ended .* out of memory/, 'the error says what happened')
  t.same(failures, [], `/healthz answered all ${latencies.length} polls during the check (slowest ${Math.round(Math.max(...latencies))} ms)`)
  t.ok(latencies.length >= 3, 'polled while the check ran')

  const after = await waitFor(async () => { const rss = await rssOf(pid); return rss < RSS_LIMIT ? rss : undefined }, 'the coordinator\'s RSS under 300 MB', 30_000, 500).catch(async () => await rssOf(pid))
  t.ok(after < RSS_LIMIT, `the coordinator's RSS is ${Math.round(after / 1e6)} MB after the refusal`)

  const list = await coordinator.request('GET', '/api/v1/models', { token })
  t.equal(list.body.count, 0, 'nothing stored')
  const modelsDir = join(coordinator.init.dataDir, 'models')
  const left = (await readdir(modelsDir, { recursive: true }).catch(() => [])).filter(f => !f.startsWith('.staging'))
  t.same(left, [], 'no files left behind in the repository')
  t.same(await readdir(join(modelsDir, '.staging')).catch(() => []), [], 'nor in its staging folder')

  // the coordinator still does its job
  const health = await fetch(`${coordinator.url}/healthz`)
  t.equal(health.status, 200)
})
