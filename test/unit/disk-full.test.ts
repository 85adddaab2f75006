import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { BundleStore, SPACE_RESERVE_BYTES } from '../../node/bundles/store.ts'
import { LogStore } from '../../node/logs/log-store.ts'
import { RotatingFile } from '../../node/logs/rotating-file.ts'
import { Outbox } from '../../node/outbox/outbox.ts'
import { LevelRegistryStore } from '../../node/registry/store.ts'
import { openDatabase, type GuardedLevel } from '../../node/store/db.ts'
import { DiskGuard, isDiskFull } from '../../node/store/disk-guard.ts'
import { Tmpfs, tmpfsUnavailable } from '../helpers/tmpfs.ts'
import type { WireEntry } from '../../protocols/registry/wire.ts'

const skip = tmpfsUnavailable()
if (skip != null) {
  t.plan(0, skip)
  process.exit(0)
}

const root = await mkdtemp(join(tmpdir(), 'gm-diskfull-'))
// runs after every test's own teardown, which unmounts its tmpfs
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })

/** A logger that records what it was told, as pino would print it. */
function recorder (): { lines: Array<{ level: string, msg: string, [k: string]: unknown }>, logger: any } {
  const lines: Array<{ level: string, msg: string }> = []
  const at = (level: string) => (obj: object, msg: string) => { lines.push({ level, msg, ...obj }) }
  const logger: any = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), trace: at('trace') }
  logger.child = () => logger
  return { lines, logger }
}

async function until (what: string, fn: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const entry = (k: string, n: number): WireEntry => ({ k, v: JSON.stringify({ n, pad: 'p'.repeat(2000) }), t: [Date.now(), n], w: 'test' } as unknown as WireEntry)

t.test('the log file never throws on a full disk: lines are dropped, counted, and noted once it writes again', async t => {
  const fs = await Tmpfs.mount(join(root, 'logs'), 1024 * 1024)
  t.teardown(async () => { await fs.unmount() })
  const errors: string[] = []
  let now = 1_000_000
  const file = new RotatingFile({ path: join(fs.dir, 'agent.log'), maxBytes: 10 * 1024 * 1024, files: 1, retryMs: 1000, now: () => now, onError: err => { errors.push(err.code ?? '') } })
  file.write('{"msg":"before"}\n')
  await fs.fill()
  for (let i = 0; i < 500; i++) t.equal(file.write(`{"msg":"line ${i}","pad":"${'x'.repeat(200)}"}\n`), true)
  t.same(errors, ['ENOSPC'], 'told once, not per line')
  t.ok(file.dropped > 400, `${file.dropped} lines dropped (the file's last page took a few)`)
  await fs.free()
  file.write('{"msg":"too soon"}\n')
  now += 1000
  file.write('{"msg":"after"}\n')
  file.close()
  const text = await readFile(join(fs.dir, 'agent.log'), 'utf8')
  const lines = text.trim().split('\n')
  t.equal(lines[0], '{"msg":"before"}')
  t.match(lines.at(-2), /"msg":"log lines dropped: writing the log file failed","dropped":\d+/, 'a line says how many went missing')
  t.equal(lines.at(-1), '{"msg":"after"}', 'and writing goes on')
  for (const line of lines) t.doesNotThrow(() => JSON.parse(line), 'every line is whole JSON (the one cut short was taken back)')
})

t.test('LevelDB on a full disk: writes stop at once, reads go on, everything held is written when space returns', async t => {
  const fs = await Tmpfs.mount(join(root, 'data'), 8 * 1024 * 1024)
  t.teardown(async () => { await fs.unmount() })
  const { lines, logger } = recorder()
  const guard = new DiskGuard({ dataDir: fs.dir, logger }, { probeIntervalMs: 100, resumeFreeBytes: 2 * 1024 * 1024 })
  t.teardown(() => { guard.close() })
  let db: GuardedLevel = await openDatabase(fs.dir, { guard })
  const registry = new LevelRegistryStore(db)
  const delivered: string[] = []
  const outbox = new Outbox({ db, deliver: async job => { delivered.push(job.id) }, logger })
  await outbox.start()
  const logs = new LogStore({ flushIntervalMs: 20 })
  await logs.open(db)
  await db.put('before', { ok: true })

  // leave a little room: LevelDB's log takes the writes, and then a memtable flush runs out of
  // space, which leaves LevelDB refusing every write until it is reopened
  await fs.fill(200 * 1024)
  let refused: any
  for (let i = 0; i < 5000 && refused == null; i++) {
    try {
      await db.put(`k${i}`, { i, pad: 'q'.repeat(4096) })
    } catch (err) {
      refused = err
    }
  }
  t.equal(refused?.code, 'ERR_DISK_FULL', 'a write that hit the full disk fails with DiskFullError')
  t.ok(isDiskFull(refused?.cause ?? refused), `caused by ENOSPC: ${String(refused?.cause?.message ?? refused?.message)}`)
  t.ok(guard.full, 'the guard knows the disk is full')
  await new Promise(resolve => setTimeout(resolve, 20))
  const errors = lines.filter(l => l.level === 'error')
  t.equal(errors.length, 1, 'logged once, at error')
  t.match(errors[0], { path: new RegExp(fs.dir), msg: /disk full: writing stopped/ }, 'with the path')

  const refusedBefore = guard.state().refused ?? 0
  const later = await db.put('during', 1).then(() => undefined, (err: any) => err)
  t.equal(later?.code, 'ERR_DISK_FULL', 'later writes are refused at once')
  t.equal(later?.cause, undefined, 'by the guard, without touching the disk (no ENOSPC from LevelDB behind it)')
  t.equal(guard.state().refused, refusedBefore + 1, 'and the guard counted the refusal')
  t.same(await db.get('before'), { ok: true }, 'reads still answer')

  await registry.put([entry('node/held', 1)])
  t.equal(registry.held, 1, 'a registry entry waits in memory instead of failing')
  const job = (await outbox.enqueue({ type: 'log', action: { type: 'log', message: 'hi' } as any, event: {}, instance: 'i', rule: 'r' }))!
  await until('the job to be delivered from memory', () => delivered.includes(job.id))
  t.pass('an action queued during the full disk is still delivered')
  for (let i = 0; i < 50; i++) logs.write(JSON.stringify({ level: 'info', time: Date.now(), msg: `during ${i}` }) + '\n')
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(logs.stats().pending, 50, 'log lines wait in memory')
  t.equal(lines.filter(l => l.level === 'error').length, 1, 'still one error line after all that')

  await fs.free()
  await until('writing to resume', () => !guard.full)
  t.ok(lines.some(l => l.level === 'info' && /writing resumed/.test(l.msg)), 'said at info that writing resumed')
  await db.put('after', { ok: true })
  t.same(await db.get('after'), { ok: true }, 'writes work again (LevelDB was reopened)')
  await until('held registry entries to be written', () => registry.held === 0)
  await until('the outbox state to be written', () => outbox.unsaved === 0)
  await until('held log lines to be written', () => logs.stats().pending === 0)

  await outbox.stop()
  await logs.close()
  await db.close()
  db = await openDatabase(fs.dir, { guard })
  t.same((await new LevelRegistryStore(db).load()).map(([key]) => key), ['node/held'], 'the held registry entry is on disk')
  t.equal(await db.sublevel('outbox', { valueEncoding: 'json' }).get(job.id), undefined, 'the delivered job is not left on disk')
  t.ok((await db.sublevel('logs', { valueEncoding: 'utf8' }).values().all()).some(l => l.includes('during 49')), 'the held log lines are on disk')
  await db.close()
})

t.test('a memtable flush that ran out of space (LevelDB then refuses all writes) is cleared by reopening', async t => {
  const fs = await Tmpfs.mount(join(root, 'flush'), 8 * 1024 * 1024)
  t.teardown(async () => { await fs.unmount() })
  const { logger } = recorder()
  const guard = new DiskGuard({ dataDir: fs.dir, logger }, { probeIntervalMs: 100, resumeFreeBytes: 2 * 1024 * 1024 })
  t.teardown(() => { guard.close() })
  const db = await openDatabase(fs.dir, { guard })
  const sub = db.sublevel<string, unknown>('sub', { valueEncoding: 'json' })
  await sub.put('before', 1)
  // a memtable most of the way to its 512 KiB (random data: no compression), then room for the
  // rest of its log records but not for the table it is flushed to. Which write runs out of space
  // first is up to LevelDB's background thread: when it was the log, space is freed and it goes again.
  let refused: any
  for (let attempt = 0; attempt < 5 && !/\.ldb: /.test(String(refused?.cause?.message)); attempt++) {
    if (refused != null) {
      await fs.free()
      await until('writing to resume', () => !guard.full)
    }
    refused = undefined
    for (let i = 0; i < 100; i++) await sub.put(`pre${attempt}-${i}`, randomBytes(3072).toString('base64'))
    await fs.fill(150 * 1024)
    for (let i = 0; i < 1000 && refused == null; i++) {
      try {
        await sub.put(`k${attempt}-${i}`, randomBytes(3072).toString('base64'))
      } catch (err) {
        refused = err
      }
    }
  }
  t.equal(refused?.code, 'ERR_DISK_FULL')
  t.match(String(refused?.cause?.message), /\.ldb: No space left on device/, 'the flush to a table file failed')
  await fs.free()
  await until('writing to resume', () => !guard.full)
  await sub.put('after', 2)
  t.equal(await sub.get('after'), 2, 'a sublevel writes again: the database and its sublevels were reopened')
  t.equal(await sub.get('before'), 1)
  await db.close()
})

t.test('an agent starting on a full disk waits for space to open its database, then opens it', async t => {
  const fs = await Tmpfs.mount(join(root, 'boot'), 4 * 1024 * 1024)
  t.teardown(async () => { await fs.unmount() })
  const { lines, logger } = recorder()
  const guard = new DiskGuard({ dataDir: fs.dir, logger }, { probeIntervalMs: 100, resumeFreeBytes: 1024 * 1024 })
  t.teardown(() => { guard.close() })
  const first = await openDatabase(fs.dir, { guard })
  await first.put('kept', 1)
  await first.close()
  await fs.fill()
  let opened: GuardedLevel | undefined
  const opening = openDatabase(fs.dir, { guard }).then(db => { opened = db })
  await until('the disk-full error line', () => lines.some(l => l.level === 'error'))
  await new Promise(resolve => setTimeout(resolve, 500))
  t.equal(opened, undefined, 'still waiting while the disk is full')
  await fs.free()
  await opening
  t.equal(await opened!.get('kept'), 1, 'opened once space returned, nothing lost')
  t.equal(lines.filter(l => l.level === 'error').length, 1, 'one error line for the whole wait')
  await opened!.close()
})

t.test('a bundle download that would not fit in the free space is refused before a byte is written', async t => {
  const fs = await Tmpfs.mount(join(root, 'bundles'), 32 * 1024 * 1024)
  t.teardown(async () => { await fs.unmount() })
  const db = await openDatabase(fs.dir)
  t.teardown(async () => { await db.close() })
  const store = new BundleStore(fs.dir, db)
  await store.open()
  const size = 20 * 1024 * 1024
  const head = { size, tailOffset: size - 64, midstate: new Uint8Array(32), tail: new Uint8Array(64) }
  await t.rejects(store.createPartial('ab'.repeat(32), head, { chunkSize: 1024 * 1024, hashes: [] } as unknown as Parameters<BundleStore['createPartial']>[2]), {
    code: 'ERR_INSUFFICIENT_SPACE',
    message: new RegExp(`needs ${size} bytes plus a reserve of ${SPACE_RESERVE_BYTES}; \\d+ are free on ${fs.dir}`)
  })
  t.same(await readdir(join(fs.dir, 'bundles', 'partial')), [], 'no partial file was made')
  t.equal(store.get('ab'.repeat(32)), undefined, 'nor a record')
})
