import t from 'tap'
import fc from 'fast-check'
import { MemoryMesh } from '../helpers/memory-mesh.ts'

// list(prefix) reads a range of the sorted keys; it must answer exactly what a pass over every entry would.

t.test('list(prefix) is the sorted, filtered pass over every entry, through writes and deletes', async t => {
  const mesh = new MemoryMesh()
  const m = await mesh.add()
  await mesh.introduce()
  await m.registry.start()
  t.teardown(async () => { await m.registry.stop() })
  const self = m.peerId.toString()
  const names = ['a', 'ab', 'abc', 'b', 'b/c', 'a.b', 'z', 'A', '0', 'a/b/c', 'a-b', 'a+b', '@x']
  const naive = (prefix: string, tombstones: boolean): string[] =>
    [...m.registry.wireEntries()].filter(e => e.k.startsWith(prefix) && (tombstones || e.v != null)).map(e => e.k).sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
  await fc.assert(fc.asyncProperty(fc.array(fc.record({ op: fc.constantFrom('set', 'delete'), name: fc.constantFrom(...names) }), { minLength: 1, maxLength: 30 }), async ops => {
    for (const { op, name } of ops) {
      const key = `instance/${self}/${name}`
      if (op === 'set') await m.registry.set(key, { state: 'running' })
      else await m.registry.delete(key)
    }
    for (const prefix of ['', 'instance/', `instance/${self}/`, `instance/${self}/a`, `instance/${self}/ab`, `instance/${self}/b/`, 'instancf', 'h', `instance/${self}/a.`]) {
      for (const tombstones of [false, true]) {
        const got = m.registry.list(prefix, { tombstones }).map(e => e.key)
        const want = naive(prefix, tombstones)
        if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${prefix} (tombstones ${tombstones}): ${JSON.stringify(got)} ≠ ${JSON.stringify(want)}`)
      }
    }
    return true
  }), { numRuns: 60 })
  t.pass('list(prefix) agreed with the full pass after every run')
})

t.test('entries the retention collects leave the index too', async t => {
  const mesh = new MemoryMesh()
  const m = await mesh.add({ init: { retentionMs: 50 } })
  await mesh.introduce()
  await m.registry.start()
  t.teardown(async () => { await m.registry.stop() })
  const self = m.peerId.toString()
  for (const name of ['a', 'b', 'c', 'd']) await m.registry.set(`instance/${self}/${name}`, { state: 'running' })
  await m.registry.delete(`instance/${self}/b`)
  await m.registry.delete(`instance/${self}/d`)
  t.same(m.registry.list(`instance/${self}/`, { tombstones: true }).map(e => e.key.slice(-1)), ['a', 'b', 'c', 'd'], 'tombstones listed while kept')
  await new Promise(resolve => setTimeout(resolve, 120))
  await m.registry.sweep()
  t.same([...m.registry.wireEntries()].filter(e => e.k.startsWith('instance/')).map(e => e.k.slice(-1)).sort(), ['a', 'c'], 'the sweep collected the tombstones')
  t.same(m.registry.list(`instance/${self}/`, { tombstones: true }).map(e => e.key.slice(-1)), ['a', 'c'], 'and the index with them')
  await m.registry.set(`instance/${self}/b`, { state: 'starting' })
  t.same(m.registry.list(`instance/${self}/`).map(e => e.key.slice(-1)), ['a', 'b', 'c'], 'a key written again is listed again, once')
})
