import { readFile } from 'node:fs/promises'
import t from 'tap'
import { sleep, waitFor } from '../helpers/cluster.ts'
import { NetLab } from '../helpers/netns.ts'
import { OWNER_ENV, RUN_ENV, RUN_ID, exec, run, start } from '../helpers/processes.ts'

// test/helpers/processes.ts: every way a test process can end takes its children with it
const HELPER = new URL('../helpers/processes.ts', import.meta.url).pathname

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
const environ = async (pid: number): Promise<string[]> => (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0')
/** `environ` once the child is `program`: between fork and exec (and in `env`, before it execs) it shows what came before */
const execed = async (pid: number, program: string): Promise<string[]> => {
  await waitFor(async () => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).startsWith(`${program}\0`) || undefined, 'the child to exec', 10_000, 20)
  return await environ(pid)
}

/**
 * A test process of its own (node importing the helper) that starts
 * `sleep 600` and a shell running two sleeps, prints their pids, and once
 * told to (a line on stdin) does what `body` says.
 */
async function owner (body: string): Promise<{ pid: number, pids: number[], exited: Promise<unknown>, go: () => void }> {
  const script = `import { start } from ${JSON.stringify(HELPER)}
import { once } from 'node:events'
import { createInterface } from 'node:readline'
const a = start('sleep', ['600'])
const b = start('bash', ['-c', 'sleep 601 & sleep 602 & wait'])
console.log(JSON.stringify([a.pid, b.pid]))
await once(createInterface({ input: process.stdin }), 'line')
${body}`
  const p = start(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'], name: 'owner', t })
  let out = ''
  p.child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d })
  const pids = await waitFor(() => { try { return JSON.parse(out.split('\n')[0]!) as number[] } catch { return undefined } }, 'the owner to start its children', 30_000, 50)
  // the shell's own sleeps: in its process group, not known to the owner
  const group = await waitFor(async () => {
    const kids = (await readFile(`/proc/${pids[1]}/task/${pids[1]}/children`, 'utf8')).trim().split(/\s+/).filter(Boolean).map(Number)
    return kids.length === 2 ? kids : undefined
  }, 'the shell to start its sleeps', 10_000, 50)
  return { pid: p.pid!, pids: [...pids, ...group], exited: p.exited, go: () => { p.child.stdin!.write('go\n') } }
}

const allGone = async (pids: number[], what: string, timeoutMs = 10_000): Promise<void> => {
  // a killed process lingers a moment as a zombie until its parent (or init) reaps it
  await waitFor(() => !pids.some(alive), what, timeoutMs, 50)
}

t.test('children carry the run and owner markers and get a process group of their own', async t => {
  const p = start('sleep', ['30'], { t })
  const env = await environ(p.pid!)
  t.ok(env.includes(`${RUN_ENV}=${RUN_ID}`), 'the run id')
  t.ok(env.some(e => e.startsWith(`${OWNER_ENV}=`)), 'the owner token')
  const stat = await readFile(`/proc/${p.pid!}/stat`, 'utf8')
  t.equal(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]), p.pid, 'its own process group')
  const bare = start('sleep', ['30'], { bareEnv: true, env: { PATH: '/usr/bin:/bin' }, t })
  t.ok((await environ(bare.pid!)).includes(`${RUN_ENV}=${RUN_ID}`), 'a bare environment still gets the markers')
})

t.test('node children run without tap\'s process-info hook, in the process the test was given', async t => {
  t.match(process.env.NODE_OPTIONS ?? '', /@tapjs\/processinfo/, 'this test itself runs with the hook (so the check below can fail)')
  const p = start(process.execPath, ['-e', 'setTimeout(() => {}, 30_000)'], { t })
  const env = await execed(p.pid!, process.execPath)
  t.notOk(env.some(e => e.startsWith('NODE_OPTIONS=')), 'no NODE_OPTIONS, so no --import of the hook')
  t.ok(env.includes(`${RUN_ENV}=${RUN_ID}`), 'the markers are still there')
  const { stdout } = await run(process.execPath, ['-p', 'process.env.NODE_OPTIONS ?? "none"'])
  t.equal(stdout.trim(), 'none', 'run() goes the same way')
})

t.test('stop() ends the child and what it started in its group', async t => {
  const p = start('bash', ['-c', 'trap "" TERM; sleep 600 & sleep 601 & wait'], { graceMs: 500 })
  await sleep(300)
  const kids = (await readFile(`/proc/${p.pid!}/task/${p.pid!}/children`, 'utf8')).trim().split(/\s+/).map(Number)
  t.equal(kids.length, 2)
  const exit = await p.stop()
  t.equal(exit?.signal, 'SIGKILL', 'a child that ignores SIGTERM is killed after the grace period')
  await allGone(kids, 'its own children to be gone too')
  t.pass('its own children are gone too')
})

t.test('run(): output, exit codes and timeouts like execFile', async t => {
  t.same(await run('sh', ['-c', 'echo out; echo err >&2']), { stdout: 'out\n', stderr: 'err\n' })
  t.equal((await run('cat', [], { input: 'from stdin' })).stdout, 'from stdin')
  const failed = await run('sh', ['-c', 'echo why >&2; exit 3']).then(() => null, (err: any) => err)
  t.match(failed, { code: 3, stderr: 'why\n', message: /exited with 3/ })
  const started = Date.now()
  const slow = await run('bash', ['-c', 'sleep 600 & sleep 601'], { timeoutMs: 300 }).then(() => null, (err: any) => err)
  t.match(slow, { killed: true, message: /timed out after 300 ms/ })
  t.ok(Date.now() - started < 10_000, 'it did not wait for the command')
  const missing = await exec('gatemesh-no-such-command').then(() => null, (err: any) => err)
  t.match(missing, { code: 'ENOENT' })
  t.equal((await exec('sh', ['-c', 'echo $X $HOME'], { env: { X: 'only' } })).stdout, 'only\n', 'exec: env replaces the environment, as execFile does')
})

t.test('the owner exiting normally with children running: they are killed', async t => {
  const o = await owner('process.exit(0)')
  o.go()
  await o.exited
  await allGone(o.pids, 'the children to be gone')
  t.pass('gone')
})

t.test('the owner throwing at the top level exits at once, and its children go', async t => {
  const o = await owner('throw new Error("boom")')
  const started = Date.now()
  o.go()
  await o.exited
  t.ok(Date.now() - started < 30_000, `the owner did not hang on its children (${Date.now() - started} ms)`)
  await allGone(o.pids, 'the children to be gone')
  t.pass('gone')
})

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  t.test(`${signal} to the owner: its children go`, async t => {
    const o = await owner('')
    process.kill(o.pid, signal)
    await o.exited
    await allGone(o.pids, 'the children to be gone')
    t.pass('gone')
  })
}

t.test('SIGKILL to the owner (tap\'s timeout does this): the reaper ends its children', async t => {
  const o = await owner('')
  process.kill(o.pid, 'SIGKILL')
  await o.exited
  await allGone(o.pids, 'the reaper to end the children', 30_000)
  t.pass('gone')
})

const netns = await NetLab.available()
t.test('SIGKILL to the owner: the reaper removes the network namespaces it made', { skip: netns.ok ? false : `no network namespaces here: ${netns.reason}` }, async t => {
  const ns = `gmreap-${process.pid}`
  const o = await owner(`import { run, watchNetns } from ${JSON.stringify(HELPER)}
watchNetns(${JSON.stringify(ns)})
await run('ip', ['netns', 'add', ${JSON.stringify(ns)}])
setInterval(() => {}, 1000)`)
  o.go()
  await waitFor(async () => (await exec('ip', ['netns', 'list'])).stdout.includes(ns), 'the owner to make its namespace', 20_000, 100)
  process.kill(o.pid, 'SIGKILL')
  await o.exited
  await waitFor(async () => !(await exec('ip', ['netns', 'list'])).stdout.includes(ns), 'the namespace to be removed', 30_000, 200)
  t.pass('removed')
})
