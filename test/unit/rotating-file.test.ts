import { readdir, readFile } from 'node:fs/promises'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createLogger } from '../../node/logs/logger.ts'
import { RotatingFile } from '../../node/logs/rotating-file.ts'

t.test('rotates past the size limit and keeps N files', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-logs-'))
  const file = new RotatingFile({ path: join(dir, 'agent.log'), maxBytes: 1000, files: 2 })
  for (let i = 0; i < 100; i++) file.write(`${String(i).padStart(3, '0')} ${'x'.repeat(95)}\n`)
  file.close()
  t.same((await readdir(dir)).sort(), ['agent.log', 'agent.log.1', 'agent.log.2'])
  for (const f of await readdir(dir)) t.ok((await readFile(join(dir, f))).length <= 1000, `${f} within the limit`)
  t.match(await readFile(join(dir, 'agent.log'), 'utf8'), /^099 /m, 'the newest line is in the current file')
})

t.test('log lines carry node, service, level and msg; secrets are redacted', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'gm-logs-'))
  const { logger, close } = createLogger({ node: 'peer-1', dir, stdout: false })
  logger.child({ service: 'registry' }).info({ privateKey: 'SECRET', password: 'hunter2', keys: 3 }, 'loaded')
  close()
  const line = JSON.parse(await readFile(join(dir, 'agent.log'), 'utf8'))
  t.match(line, { node: 'peer-1', service: 'registry', level: 'info', msg: 'loaded', keys: 3 })
  t.equal(line.privateKey, '[redacted]')
  t.equal(line.password, '[redacted]')
})
