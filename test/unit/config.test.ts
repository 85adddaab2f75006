import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig, parseConfig } from '../../node/config/config.ts'
import { CLI } from '../helpers/cluster.ts'
import { exec as run } from '../helpers/processes.ts'

async function cli (...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args])
    return { code: 0, stdout, stderr }
  } catch (err: any) {
    return { code: err.code, stdout: err.stdout, stderr: err.stderr }
  }
}

t.test('defaults fill in a minimal config', async t => {
  const c = parseConfig({ role: 'gateway' })
  t.equal(c.api.host, '127.0.0.1')
  t.equal(c.api.port, 7401)
  t.equal(c.membership.probeIntervalMs, 1000)
  t.equal(c.membership.probeTimeoutMs, 500)
  t.equal(c.membership.health.maxIntervalMs, 60_000)
  t.equal(c.registry.retentionMs, 72 * 3_600_000)
  t.same(c.labels, {})
  t.same(c.bootstrap, [])
})

t.test('a bad value is an error naming the field', async t => {
  const cases: Array<[unknown, string]> = [
    [{}, 'config.role'],
    [{ role: 'toaster' }, 'config.role'],
    [{ role: 'gateway', api: { port: 70000 } }, 'config.api.port'],
    [{ role: 'gateway', api: { prot: 1 } }, 'config.api.prot'],
    [{ role: 'gateway', surprise: true }, 'config.surprise'],
    [{ role: 'gateway', labels: { 'bad key': 'x' } }, 'config.labels.bad key'],
    [{ role: 'gateway', membership: { probeIntervalMs: 'fast' } }, 'config.membership.probeIntervalMs'],
    [{ role: 'gateway', membership: { probeIntervalMs: 500, probeTimeoutMs: 500 } }, 'config.membership.probeTimeoutMs'],
    [{ role: 'gateway', membership: { heartbeatIntervalMs: 1000 } }, 'config.membership.heartbeatIntervalMs'],
    [{ role: 'gateway', membership: { health: { maxIntervalMs: 10 } } }, 'config.membership.health.maxIntervalMs'],
    [{ role: 'gateway', registry: { retentionMs: 60_000 } }, 'config.registry.retentionMs'],
    [{ role: 'gateway', registry: { retentionMs: 3_600_000, maxClockDriftMs: 600_000 } }, 'config.registry.retentionMs'],
    [{ role: 'gateway', listen: ['not a multiaddr'] }, 'config.listen[0]'],
    [{ role: 'gateway', bootstrap: ['/ip4/127.0.0.1/tcp/1'] }, 'config.bootstrap[0]'],
    [[], 'config']
  ]
  for (const [input, field] of cases) {
    t.throws(() => parseConfig(input), { code: 'ERR_CONFIG', field }, `${JSON.stringify(input)} → ${field}`)
    try { parseConfig(input) } catch (err: any) { t.ok(err.message.includes(field), `the message names it too: ${err.message}`) }
  }
})

t.test('a config file that is not JSON names the file', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-config-'))
  await writeFile(join(dir, 'config.json'), '{"role": "gateway",')
  await t.rejects(loadConfig(dir), { code: 'ERR_CONFIG', message: /config\.json is not valid JSON/ })
})

t.test('CLI: fleet init and node init', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-cli-'))
  const fleet = await cli('fleet', 'init', join(dir, 'fleet'))
  t.equal(fleet.code, 0, fleet.stderr)
  for (const f of ['fleet.key', 'network.key']) t.equal((await stat(join(dir, 'fleet', f))).mode & 0o777, 0o600, `${f} is 0600`)
  t.equal((await cli('fleet', 'init', join(dir, 'fleet'))).code, 1, 'refuses to overwrite a fleet')

  const ok = await cli('node', 'init', join(dir, 'n1'), '--fleet', join(dir, 'fleet'), '--role', 'gateway', '--labels', 'zone=a,site=b', '--listen', '/ip4/127.0.0.1/tcp/0', '--api-port', '0')
  t.equal(ok.code, 0, ok.stderr)
  for (const f of ['peer.key', 'network.key']) t.equal((await stat(join(dir, 'n1', f))).mode & 0o777, 0o600, `${f} is 0600`)
  const config = JSON.parse(await readFile(join(dir, 'n1', 'config.json'), 'utf8'))
  t.same(config.labels, { zone: 'a', site: 'b' })
  const key = await readFile(join(dir, 'fleet', 'fleet.key'), 'utf8')
  t.notMatch(ok.stdout + ok.stderr, key.split('\n')[1]!, 'the key is not printed')

  const badRole = await cli('node', 'init', join(dir, 'n2'), '--fleet', join(dir, 'fleet'), '--role', 'toaster')
  t.equal(badRole.code, 2)
  t.match(badRole.stderr, /config\.role/)
  const badPort = await cli('node', 'init', join(dir, 'n3'), '--fleet', join(dir, 'fleet'), '--role', 'server', '--api-port', 'eighty')
  t.equal(badPort.code, 2)
  t.match(badPort.stderr, /--api-port/)
  const badBootstrap = await cli('node', 'init', join(dir, 'n4'), '--fleet', join(dir, 'fleet'), '--role', 'server', '--bootstrap', '/ip4/1.2.3.4/tcp/1')
  t.equal(badBootstrap.code, 2)
  t.match(badBootstrap.stderr, /config\.bootstrap\[0\]/)
  await t.rejects(stat(join(dir, 'n4')), 'a refused init leaves nothing behind')

  const unknown = await cli('frobnicate')
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command/)
})

t.test('CLI: an agent with a broken config exits non-zero naming the field', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-cli-'))
  await cli('fleet', 'init', join(dir, 'fleet'))
  await cli('node', 'init', join(dir, 'n'), '--fleet', join(dir, 'fleet'), '--role', 'gateway')
  const config = JSON.parse(await readFile(join(dir, 'n', 'config.json'), 'utf8'))
  config.api.port = -1
  await writeFile(join(dir, 'n', 'config.json'), JSON.stringify(config))
  const res = await cli('agent', '--data', join(dir, 'n'))
  t.equal(res.code, 2)
  t.match(res.stderr, /config\.api\.port/)
})
