import { createInterface } from 'node:readline'
import t, { type Test } from 'tap'
import { budget, calibrate } from '../helpers/budget.ts'
import { sleep } from '../helpers/cluster.ts'
import { start as startProcess, type TestProcess } from '../helpers/processes.ts'

// Issue 14: "the crash guard is defeated once the TF.js wasm backend installs
// its own rethrowing handler". A real service process (runService) loads
// TF.js's wasm backend in its main thread and then meets stray errors: a
// registry listener that overflows its stack on a deeply nested value, an
// unhandled rejection, a throw from a timer, and the backend's dispose that
// removes every process error listener. Each must leave it running. The
// same process without the guard dies of each: the control.

const FIXTURE = new URL('./fixtures/crash-guard-service.ts', import.meta.url).pathname
// no agent starts here to set the pace: a fixed piece of work does
await calibrate()

interface Service { process: TestProcess, port: number, backend: string, listeners: { before: { exception: number }, after: { exception: number } }, stderr: () => string }

async function start (t: Test, guarded: boolean): Promise<Service> {
  const service = startProcess(process.execPath, [FIXTURE, ...(guarded ? [] : ['--unguarded'])], { name: `crash-guard service${guarded ? '' : ' (unguarded)'}`, stdio: ['ignore', 'pipe', 'pipe'], t })
  const child = service.child
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const startMs = budget(120_000)
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`the service did not start in ${startMs} ms: ${stderr}`)) }, startMs)
    createInterface({ input: child.stdout! }).once('line', l => { clearTimeout(timer); resolve(l) })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`the service exited with ${code}: ${stderr}`)) })
  })
  const [, port, backend, json] = /^PORT (\d+) (\S+) (.*)$/.exec(line) ?? []
  return { process: service, port: Number(port), backend: backend!, listeners: JSON.parse(json!), stderr: () => stderr }
}

async function alive (s: Service): Promise<boolean> {
  if (!s.process.running) return false
  return await fetch(`http://127.0.0.1:${s.port}/listeners`, { signal: AbortSignal.timeout(10_000) }).then(r => r.ok, () => false)
}

const trigger = async (s: Service, fault: string): Promise<void> => {
  await fetch(`http://127.0.0.1:${s.port}/${fault}`, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
  // the errors surface on a later tick; the wasm dispose on a later promise
  await sleep(budget(1000))
}

const FAULTS = ['bad-event', 'rejection', 'timer']

t.test('without the guard, TF.js\'s handler turns each stray error into a crash (control)', async t => {
  for (const fault of FAULTS) {
    const s = await start(t, false)
    t.equal(s.backend, 'wasm')
    t.ok(s.listeners.after.exception > s.listeners.before.exception, 'loading the wasm backend added a process listener')
    await trigger(s, fault)
    t.notOk(await alive(s), `${fault}: the unguarded process died`)
  }
})

t.test('with the guard the service keeps running through every one of them', async t => {
  const s = await start(t, true)
  t.equal(s.backend, 'wasm')
  for (const fault of FAULTS) {
    await trigger(s, fault)
    t.ok(await alive(s), `${fault}: still answering`)
  }
  t.match(s.stderr(), /a module added a process error listener/, 'the foreign listener was noticed')
  t.match(s.stderr(), /Maximum call stack size exceeded/, 'the overflow was logged')
  t.match(s.stderr(), /a promise nobody awaited/)

  await trigger(s, 'dispose-wasm')
  const counts = await (await fetch(`http://127.0.0.1:${s.port}/listeners`)).json() as { exception: number, rejection: number }
  t.same(counts, { exception: 1, rejection: 1 }, 'disposing the backend leaves our listeners in place')
  await trigger(s, 'timer')
  t.ok(await alive(s), 'and errors after it are still only logged')
})
