import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { runScript } from '../../node/actions/script.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-script-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
const bundle = join(root, 'bundle')
const scratch = join(root, 'scratch')
const outside = join(root, 'outside.txt')
await mkdir(bundle)
const script = join(bundle, 'action.js')
await writeFile(script, `
const fs = require('node:fs')
let input = ''
process.stdin.on('data', d => { input += d })
process.stdin.on('end', () => {
  const event = JSON.parse(input)
  console.log('class=' + event.class + ' key=' + process.env.GATEMESH_IDEMPOTENCY_KEY)
  fs.writeFileSync('last.json', input)
  switch (process.argv[2]) {
    case 'escape': fs.writeFileSync(${JSON.stringify(outside)}, 'escaped'); break
    case 'spawn': require('node:child_process').execSync('echo hi'); break
    case 'loop': for (;;) {} break
    case 'hog': { const a = []; for (;;) a.push(new Array(1e6).fill(1)) } break
    case 'env': console.log(JSON.stringify(Object.keys(process.env).sort())); break
  }
})
`)

const lines: string[] = []
const logger = { info: (o: { line: string }) => { lines.push(o.line) }, warn: () => {} }
const run = async (arg: string): Promise<unknown> => await runScript({ path: script, scratch, input: { class: 'anomaly', score: 0.99 }, args: [arg], timeoutMs: 1500, maxMemoryMb: 32, env: { GATEMESH_IDEMPOTENCY_KEY: 'k1' }, logger })

t.test('the script gets the prediction on stdin; its stdout goes to the log; it may write its scratch dir', async t => {
  t.same(await run('ok'), { exitCode: 0, lines: 1 })
  t.same(lines, ['class=anomaly key=k1'])
  t.same(JSON.parse(await readFile(join(scratch, 'last.json'), 'utf8')), { class: 'anomaly', score: 0.99 })
  lines.length = 0
  await run('env')
  t.same(JSON.parse(lines[1]!), ['GATEMESH_IDEMPOTENCY_KEY', 'HOME', 'PATH'], 'none of the agent\'s environment leaks in')
})

t.test('writing outside the scratch dir is stopped', async t => {
  await t.rejects(run('escape'), { code: 'ERR_SCRIPT_SANDBOX', permanent: true, message: /FileSystemWrite denied/ })
  await t.rejects(stat(outside), { code: 'ENOENT' }, 'nothing was written')
})

t.test('spawning a process is stopped', async t => {
  await t.rejects(run('spawn'), { code: 'ERR_SCRIPT_SANDBOX', message: /ChildProcess denied/ })
})

t.test('a script looping forever is killed at its time limit', async t => {
  const start = Date.now()
  await t.rejects(run('loop'), { code: 'ERR_SCRIPT_TIMEOUT', signal: 'SIGKILL' })
  const took = Date.now() - start
  t.ok(took >= 1400 && took < 5000, `killed after ${took} ms`)
})

t.test('a script past its memory cap dies', async t => {
  await t.rejects(run('hog'), { code: 'ERR_SCRIPT', message: /killed|exited/ })
})
