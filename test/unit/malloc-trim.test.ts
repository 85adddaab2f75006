import t from 'tap'
import pino from 'pino'
import { Registry } from 'prom-client'
import { loadTrimAddon, MallocTrim } from '../../node/metrics/malloc-trim.ts'

const quiet = pino({ level: 'silent' })

async function counter (registry: Registry, name: string): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find(m => m.name === name)
  return Number((metric as any)?.values?.[0]?.value ?? NaN)
}

t.test('the addon built at install trims glibc\'s heap, and the RSS it gives back is counted', async t => {
  const loaded = await loadTrimAddon()
  if ('missing' in loaded) return t.fail(`the addon did not load: ${loaded.missing}`)
  t.equal(loaded.addon.supported(), true, 'glibc')
  t.type(loaded.addon.trim(), 'boolean', 'trim() answers whether it released memory')

  const registry = new Registry()
  const sizes = [200e6, 150e6]
  const trim = new MallocTrim({ intervalMs: 60_000, logger: quiet, registry, rss: () => sizes.shift() ?? 0 })
  await trim.start()
  t.ok(trim.running, 'runs with the real addon')
  t.equal(trim.trim(), 50e6, 'the drop in RSS across the call')
  t.equal(await counter(registry, 'gatemesh_process_malloc_trim_released_bytes_total'), 50e6)
  t.ok(await counter(registry, 'gatemesh_process_malloc_trim_seconds_total') >= 0, 'time spent is counted')
  trim.stop()
  t.notOk(trim.running, 'stopped')
})

t.test('trims on its interval, never counts a growth as released, and an interval of 0 turns it off', async t => {
  let calls = 0
  const addon = { trim: () => { calls++; return true }, supported: () => true }
  const registry = new Registry()
  const sizes = [100, 120]
  const trim = new MallocTrim({ intervalMs: 20, logger: quiet, registry, addon, rss: () => sizes.shift() ?? 50 })
  await trim.start()
  await new Promise(resolve => setTimeout(resolve, 150))
  trim.stop()
  t.ok(calls >= 2, `trimmed on the interval (${calls} calls)`)
  const after = calls
  await new Promise(resolve => setTimeout(resolve, 60))
  t.equal(calls, after, 'no trim after stop')
  t.equal(await counter(registry, 'gatemesh_process_malloc_trim_released_bytes_total'), 0, 'RSS that grew across a call released nothing')

  const off = new MallocTrim({ intervalMs: 0, logger: quiet, registry: new Registry(), addon })
  await off.start()
  t.notOk(off.running, 'interval 0: off')
  t.equal(off.trim(), 0, 'and trim() does nothing')
})
