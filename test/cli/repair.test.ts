import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { EXIT_DAMAGED_DATA } from '../../node/store/errors.ts'
import { agentUnit, DAMAGED_DATA_EXIT } from '../../packaging/image/layout.ts'
import { budget } from '../helpers/budget.ts'
import { Cluster } from '../helpers/cluster.ts'
import { start } from '../helpers/processes.ts'

// one agent process on 127.0.0.1 whose database the test damages between runs
const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const gw = await cluster.addNode('gw')
const db = join(gw.dir, 'db')

/** Run the CLI (as the agent runs: the cluster's command) to its end; every run here is short, killed if it outlives `ms`. */
async function cli (args: string[], ms = 60_000): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const p = start(cluster.command.exec, [...cluster.command.args, ...args], {
    name: `gatemesh ${args.join(' ')}`,
    stdio: ['ignore', 'pipe', 'pipe'],
    t,
    ...(cluster.command.env == null ? {} : { env: cluster.command.env })
  })
  const timer = setTimeout(() => { p.kill() }, budget(ms))
  let stdout = ''
  let stderr = ''
  p.child.stdout!.on('data', d => { stdout += String(d) })
  p.child.stderr!.on('data', d => { stderr += String(d) })
  const code = await new Promise<number | null>(resolve => p.child.on('close', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

async function flipByte (file: string, at: (length: number) => number): Promise<void> {
  const bytes = await readFile(file)
  const i = at(bytes.length)
  bytes[i] = bytes[i]! ^ 0x5a
  await writeFile(file, bytes)
}

/** The agent's exit on a damaged database: status and what it printed. */
async function startDamaged (): Promise<{ code: number | null, stderr: string }> {
  const before = (await cluster.stderr('gw')).length
  const node = await cluster.start('gw', { wait: false })
  // an agent that does start (the damage went unnoticed) is stopped at the budget's end and fails the test
  const timer = setTimeout(() => { node.process?.kill() }, budget(120_000))
  const { code } = await node.process!.exited
  clearTimeout(timer)
  return { code, stderr: (await cluster.stderr('gw')).slice(before) }
}

await cluster.start('gw')
await cluster.request('gw', 'PUT', `/v1/registry/instance/${gw.peerId}/kept`, { value: { kept: true } })
await cluster.stop('gw')

for (const target of ['MANIFEST', 'CURRENT'] as const) {
  await t.test(`a byte flipped in ${target}: a clear error, exit ${EXIT_DAMAGED_DATA}, and gatemesh repair fixes it`, async t => {
    const file = target === 'CURRENT' ? 'CURRENT' : (await readdir(db)).find(f => f.startsWith('MANIFEST-'))!
    // CURRENT names the MANIFEST: a flipped letter points at a file that is not there; a MANIFEST byte breaks its checksum
    await flipByte(join(db, file), n => target === 'CURRENT' ? 3 : Math.floor(n / 2))

    const damaged = await startDamaged()
    t.equal(damaged.code, EXIT_DAMAGED_DATA, `the agent exits with ${EXIT_DAMAGED_DATA}, not a crash to restart`)
    t.match(damaged.stderr, `database ${db} is damaged`, 'the error names the path')
    t.match(damaged.stderr, /(Corruption|IO error): /, 'and the cause')
    t.match(damaged.stderr, `gatemesh repair --data ${gw.dir}`, 'and says what to run')
    t.match(damaged.stderr, /start fresh: the registry comes back from the mesh by anti-entropy, but .*outbox/, 'or what starting fresh loses')
    t.notMatch(damaged.stderr, /^Database failed to open$/m, 'not the bare message')

    const repaired = await cli(['repair', '--data', gw.dir])
    t.equal(repaired.code, 0, `repair exits 0 ${repaired.stderr}`)
    t.match(repaired.stdout, new RegExp(`${db}: repaired, \\d+ records readable`))

    await cluster.start('gw')
    const kept = await cluster.get('gw', `/v1/registry/instance/${gw.peerId}/kept`)
    t.match(kept, { value: { kept: true } }, 'the agent starts, with its data')
    await cluster.stop('gw')
    t.equal(cluster.node('gw').process?.exit?.code, 0, 'and stops cleanly')
  })
}

await t.test('repair leaves a healthy database alone, and refuses one in use', async t => {
  const healthy = await cli(['repair', '--data', gw.dir])
  t.equal(healthy.code, 0)
  t.match(healthy.stdout, `${db}: opens fine, left alone`)

  await cluster.start('gw')
  const busy = await cli(['repair', '--data', gw.dir])
  t.equal(busy.code, 1, 'refused while the agent runs')
  t.match(busy.stderr, `${db} is in use by a running agent or coordinator: stop it before repairing`)
  t.ok(cluster.node('gw').process?.running, 'the running agent is untouched')
  t.ok((await cluster.get('gw', '/v1/status')).self, 'and answers')
  await cluster.stop('gw')

  const none = await cli(['repair', '--data', cluster.root])
  t.equal(none.code, 2, 'a directory without a database is a usage error')
  t.match(none.stderr, 'no database under')
})

t.test('the systemd unit does not restart an agent whose database is damaged', async t => {
  t.equal(DAMAGED_DATA_EXIT, EXIT_DAMAGED_DATA, 'packaging and the agent agree on the status')
  t.match(agentUnit({ version: '0', arch: 'x64' }), new RegExp(`^RestartPreventExitStatus=2 ${EXIT_DAMAGED_DATA}$`, 'm'))
})
