import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t, { type Test } from 'tap'
import yazl from 'yazl'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import { buildBundle, unpackBundle, verifyBundle, inspectBundle } from '../../packaging/bundle/index.ts'
import { craftZip, type CraftEntry } from '../helpers/zip-craft.ts'
import { saveLayersModel } from '../helpers/models.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-unsafe-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
await initFleet(join(root, 'fleet'))
const fleet = await loadFleet(join(root, 'fleet'))
const opts = { fleetPublicKey: fleet.publicKey }

// a real signed bundle whose entries the hostile archives reuse
await saveLayersModel(join(root, 'model'))
const good = await buildBundle({ modelDir: join(root, 'model'), name: 'good', version: '1', signer: { key: fleet.privateKey }, out: join(root, 'good.zip') })
const goodDir = (await unpackBundle(good.out, join(root, 'good'), opts)).dir
const goodEntries: CraftEntry[] = []
for (const path of ['manifest.json', 'manifest.jws', ...good.manifest.files.map(f => f.path)]) {
  goodEntries.push({ name: path, data: await readFile(join(goodDir, path)) })
}

let n = 0
async function hostile (entries: CraftEntry[]): Promise<string> {
  const path = join(root, 'hostile', `h${n++}.zip`)
  await mkdir(dirname(path), { recursive: true })
  await craftZip(path, entries)
  return path
}

/** Unpacking must fail with `code` naming `entry`, and leave nothing behind anywhere. */
async function refusedToUnpack (t: Test, zip: string, code: string, entry: string | undefined, limits = {}): Promise<void> {
  const dest = join(root, 'out', `d${n++}`)
  await mkdir(dirname(dest), { recursive: true })
  const before = await readdir(root, { recursive: true })
  await t.rejects(unpackBundle(zip, dest, { ...opts, limits }), entry == null ? { code } : { code, entry }, `rejected with ${code}${entry == null ? '' : ` naming ${entry}`}`)
  t.notOk(await stat(dest).then(() => true, () => false), 'the destination was not created')
  t.same(await readdir(root, { recursive: true }), before, 'no file was written anywhere')
}

await t.test('a well-formed crafted copy of a good bundle unpacks (the crafter itself is sound)', async t => {
  const zip = await hostile(goodEntries)
  const unpacked = await unpackBundle(zip, join(root, 'out', 'crafted-ok'), opts)
  t.equal(unpacked.manifest.name, 'good')
})

await t.test('zip-slip: parent segments, absolute paths, drive letters and backslashes', async t => {
  for (const name of ['../evil.txt', 'model/../../evil.txt', '/tmp/gatemesh-evil.txt', 'C:/evil.txt', '..\\..\\evil.txt', 'model/..']) {
    await t.test(name, async t => {
      await refusedToUnpack(t, await hostile([...goodEntries, { name, data: Buffer.from('pwned') }]), 'ERR_PATH_TRAVERSAL', name.replaceAll('\\', '\\\\'))
    })
  }
  t.notOk(await stat('/tmp/gatemesh-evil.txt').then(() => true, () => false), 'nothing landed at the absolute path')
  t.notOk(await stat(join(root, 'evil.txt')).then(() => true, () => false), 'nothing landed above the destination')
})

await t.test('links and other non-files', async t => {
  await refusedToUnpack(t, await hostile([...goodEntries, { name: 'model/link', data: Buffer.from('/etc/passwd'), mode: 0o120777 }]), 'ERR_LINK_ENTRY', 'model/link')
  await refusedToUnpack(t, await hostile([...goodEntries, { name: 'model/fifo', data: Buffer.alloc(0), mode: 0o010644 }]), 'ERR_LINK_ENTRY', 'model/fifo')
  await refusedToUnpack(t, await hostile([...goodEntries, { name: 'model/sub/', data: Buffer.alloc(0), mode: 0o040755 }]), 'ERR_INVALID_ENTRY_NAME', 'model/sub/')
})

await t.test('duplicate entries', async t => {
  const weights = goodEntries.find(e => e.name.endsWith('.bin'))!
  await refusedToUnpack(t, await hostile([...goodEntries, { name: weights.name, data: Buffer.from('second copy') }]), 'ERR_DUPLICATE_ENTRY', weights.name)
  await refusedToUnpack(t, await hostile([...goodEntries, { name: 'CONFIG.json', data: Buffer.from('{}') }]), 'ERR_DUPLICATE_ENTRY', 'CONFIG.json')
})

await t.test('entries the manifest does not list, or lists but the archive lacks', async t => {
  await refusedToUnpack(t, await hostile([...goodEntries, { name: 'extra.js', data: Buffer.from('process.exit(1)') }]), 'ERR_UNLISTED_ENTRY', 'extra.js')
  await refusedToUnpack(t, await hostile(goodEntries.filter(e => e.name !== 'config.json')), 'ERR_MISSING_ENTRY', 'config.json')
  await refusedToUnpack(t, await hostile(goodEntries.filter(e => e.name !== 'manifest.jws')), 'ERR_MISSING_ENTRY', 'manifest.jws')
})

await t.test('size and content that disagree with the manifest', async t => {
  const weights = goodEntries.find(e => e.name.endsWith('.bin'))!
  const swapped = Buffer.from(weights.data)
  swapped[0] = swapped[0]! ^ 0xff
  await refusedToUnpack(t, await hostile(goodEntries.map(e => e === weights ? { ...e, data: swapped } : e)), 'ERR_HASH_MISMATCH', weights.name)
  await refusedToUnpack(t, await hostile(goodEntries.map(e => e === weights ? { ...e, data: Buffer.concat([weights.data, Buffer.from([0])]) } : e)), 'ERR_SIZE_MISMATCH', weights.name)
})

await t.test('decompression bombs', async t => {
  const zeros = Buffer.alloc(64 * 1024 * 1024)
  await t.test('an honest header with a 1000:1 ratio is refused before inflating', async t => {
    await refusedToUnpack(t, await hostile([...goodEntries, { name: 'model/bomb.bin', data: zeros, method: 8 }]), 'ERR_ARCHIVE_LIMIT', 'model/bomb.bin')
  })
  await t.test('a header that understates the size stops inflating at the stated size', async t => {
    const before = process.memoryUsage().rss
    const lying = goodEntries.map(e => e.name === 'manifest.json' ? { name: e.name, data: zeros, method: 8 as const, declaredSize: 1000 } : e)
    await refusedToUnpack(t, await hostile(lying), 'ERR_SIZE_MISMATCH', 'manifest.json')
    t.ok(process.memoryUsage().rss - before < 48 * 1024 * 1024, 'the 64 MiB payload was never held in memory')
  })
  await t.test('the total size limit', async t => {
    await refusedToUnpack(t, await hostile(goodEntries), 'ERR_ARCHIVE_LIMIT', undefined, { maxTotalBytes: 1024 })
  })
  await t.test('the entry count limit', async t => {
    await refusedToUnpack(t, await hostile(goodEntries), 'ERR_ARCHIVE_LIMIT', undefined, { maxEntries: 3 })
  })
})

await t.test('archives without a chunk index, or not zips at all', async t => {
  const plain = join(root, 'plain.zip')
  const zip = new yazl.ZipFile()
  for (const e of goodEntries) zip.addBuffer(Buffer.from(e.data), e.name)
  zip.end()
  const parts: Buffer[] = []
  for await (const chunk of zip.outputStream) parts.push(chunk as Buffer)
  await writeFile(plain, Buffer.concat(parts))
  await t.rejects(verifyBundle(plain, opts), { code: 'ERR_CORRUPT_ARCHIVE' }, 'a plain zip of the right files is not a bundle')
  await t.rejects(verifyBundle(Buffer.from('definitely not a zip'), opts), { code: 'ERR_CORRUPT_ARCHIVE' })
  await t.rejects(verifyBundle((await readFile(good.out)).subarray(0, 2000), opts), { code: 'ERR_CORRUPT_ARCHIVE' }, 'a truncated bundle')
})

await t.test('inspect reports without a key and checks with one', async t => {
  const info = await inspectBundle(good.out)
  t.equal(info.digest, good.digest)
  t.equal(info.signer.claimed, 'fleet')
  t.equal(info.signer.verified, null)
  t.equal(info.chunks, 1)
  const checked = await inspectBundle(good.out, opts)
  t.equal(checked.signer.verified, true)
  await initFleet(join(root, 'fleet2'))
  const other = await loadFleet(join(root, 'fleet2'))
  const wrong = await inspectBundle(good.out, { fleetPublicKey: other.publicKey })
  t.equal(wrong.signer.verified, false)
  t.equal(wrong.signer.error?.code, 'ERR_BUNDLE_SIGNATURE')
})
