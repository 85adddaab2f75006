import { createHash, generateKeyPairSync } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { initFleet, loadFleet } from '../../node/identity/fleet.ts'
import {
  BundleError, buildBundle, HashMismatchError, unpackBundle, verifyBundle, BundleSignatureError, type BuiltBundle
} from '../../packaging/bundle/index.ts'
import { parseIndex } from '../../packaging/bundle/chunk-index.ts'
import { writeBundleZip } from '../../packaging/bundle/zip-write.ts'
import { issuePublisherCert } from '../../packaging/trust.ts'
import { readModelArtifacts } from '../../packaging/tfjs/file-io.ts'
import { saveGraphModelFrom, saveLayersModel, tfjs } from '../helpers/models.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-bundle-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })
await initFleet(join(root, 'fleet'))
await initFleet(join(root, 'other-fleet'))
const fleet = await loadFleet(join(root, 'fleet'))
const otherFleet = await loadFleet(join(root, 'other-fleet'))
const opts = { fleetPublicKey: fleet.publicKey }

const tf = await tfjs()
const layers = await saveLayersModel(join(root, 'layers'))
await saveGraphModelFrom(layers, join(root, 'graph'))
const probe = tf.tensor2d([[0.5, -1, 2, 0.25], [1, 1, -3, 0]])
const expected = (layers.predict(probe) as import('@tensorflow/tfjs').Tensor).arraySync() as number[][]

async function build (format: 'layers' | 'graph', extra: Partial<Parameters<typeof buildBundle>[0]> = {}): Promise<BuiltBundle> {
  return await buildBundle({
    modelDir: join(root, format),
    name: `demo-${format}`,
    version: '1.0.0',
    config: { threshold: 0.8, input: { sensor: 'temp-1' } },
    signer: { key: fleet.privateKey },
    out: join(root, `${format}-${Math.random().toString(36).slice(2)}.zip`),
    ...extra
  })
}

for (const format of ['layers', 'graph'] as const) {
  await t.test(`build → verify → unpack round trip of a ${format} model`, async t => {
    const built = await build(format)
    t.match(built.digest, /^[0-9a-f]{64}$/, 'bundle id is a sha256')
    t.equal(built.manifest.model.format, `tfjs-${format}`)
    t.same(built.manifest.inputs, [{ name: format === 'layers' ? 'hidden_input' : 'x', dtype: 'float32', shape: [-1, 4] }], 'input spec read from the model')
    t.same(built.manifest.outputs, [{ name: format === 'layers' ? 'probs' : 'probs/Softmax', dtype: 'float32', shape: [-1, 3] }], 'output spec read from the model')

    const verified = await verifyBundle(built.out, opts)
    t.equal(verified.digest, built.digest, 'verify computes the same digest')
    t.equal(verified.signer, 'fleet')
    const fromBytes = await verifyBundle(await readFile(built.out), { ...opts, digest: built.digest })
    t.equal(fromBytes.digest, built.digest, 'verifies from bytes against the expected digest')

    const dest = join(root, `unpacked-${format}`)
    const unpacked = await unpackBundle(built.out, dest, opts)
    t.equal(unpacked.dir, dest)
    t.equal(unpacked.digest, built.digest)
    const listed = (await readdir(dest, { recursive: true })).sort()
    t.same(listed, ['config.json', 'manifest.json', 'manifest.jws', 'model', ...built.manifest.files.filter(f => f.path.startsWith('model/')).map(f => f.path)].sort(), 'exactly the manifest files, manifest and signature')
    t.same(JSON.parse(await readFile(join(dest, 'config.json'), 'utf8')), { threshold: 0.8, input: { sensor: 'temp-1' } }, 'config.json carries the deployment defaults')

    const artifacts = await readModelArtifacts(tf, join(dest, unpacked.manifest.model.entry))
    const model = format === 'layers' ? await tf.loadLayersModel(tf.io.fromMemory(artifacts)) : await tf.loadGraphModel(tf.io.fromMemory(artifacts))
    const got = (model.predict(probe) as import('@tensorflow/tfjs').Tensor).arraySync() as number[][]
    got.forEach((row, i) => row.forEach((v, j) => { t.ok(Math.abs(v - expected[i]![j]!) < 1e-5, `prediction [${i}][${j}] survives the round trip`) }))
    model.dispose()
  })
}

await t.test('an action script travels with the model', async t => {
  const { writeFile } = await import('node:fs/promises')
  const script = join(root, 'notify.mjs')
  await writeFile(script, 'export default async function (prediction) { return prediction }\n')
  const built = await build('layers', { action: script })
  t.equal(built.manifest.action, 'action.mjs')
  const unpacked = await unpackBundle(built.out, join(root, 'with-action'), opts)
  t.equal(await readFile(join(unpacked.dir, 'action.mjs'), 'utf8'), 'export default async function (prediction) { return prediction }\n')
})

await t.test('signatures: fleet-certified publishers pass, everyone else is refused', async t => {
  const publisher = generateKeyPairSync('ed25519')
  const cert = await issuePublisherCert(fleet.privateKey, 'vision-team', publisher.publicKey)
  const certified = await build('layers', { signer: { key: publisher.privateKey, publisherCert: cert } })
  t.equal(certified.manifest.publisher, 'vision-team')
  t.equal((await verifyBundle(certified.out, opts)).signer, 'vision-team', 'a certified publisher is accepted and named')

  const foreign = await build('layers', { signer: { key: otherFleet.privateKey } })
  await t.rejects(verifyBundle(foreign.out, opts), { code: 'ERR_BUNDLE_SIGNATURE', entry: 'manifest.jws' }, 'another fleet\'s key is refused')

  const rogueCert = await issuePublisherCert(otherFleet.privateKey, 'vision-team', publisher.publicKey)
  const uncertified = await build('layers', { signer: { key: publisher.privateKey, publisherCert: rogueCert } })
  await t.rejects(verifyBundle(uncertified.out, opts), { code: 'ERR_BUNDLE_SIGNATURE', entry: 'manifest.jws' }, 'a publisher certified by another fleet is refused')

  const bare = await build('layers', { signer: { key: publisher.privateKey } })
  await t.rejects(verifyBundle(bare.out, opts), { code: 'ERR_BUNDLE_SIGNATURE' }, 'a publisher key without any certificate is refused')

  const expiredCert = await issuePublisherCert(fleet.privateKey, 'vision-team', publisher.publicKey, -1)
  const expired = await build('layers', { signer: { key: publisher.privateKey, publisherCert: expiredCert } })
  await t.rejects(verifyBundle(expired.out, opts), { code: 'ERR_BUNDLE_SIGNATURE' }, 'an expired publisher certificate is refused')
})

/** Rebuild a bundle's zip from its unpacked files, with `change` applied: valid zip, valid chunk index, same signature. */
async function repack (dir: string, files: string[], change: (path: string, data: Buffer) => Buffer): Promise<string> {
  const out = join(root, `repack-${Math.random().toString(36).slice(2)}.zip`)
  const entries = []
  for (const path of files) entries.push({ path, data: change(path, await readFile(join(dir, path))) })
  await writeBundleZip(entries, out, new Date(0))
  return out
}

await t.test('flipping any single byte is rejected', async t => {
  const built = await build('layers')
  const zip = await readFile(built.out)
  let rejected = 0
  for (let i = 0; i < zip.byteLength; i++) {
    const bad = Buffer.from(zip)
    bad[i] = bad[i]! ^ 0x01
    try {
      await verifyBundle(bad, opts)
    } catch (err) {
      if (err instanceof BundleError) rejected++
      else t.fail(`byte ${i}: rejected with an untyped error ${String(err)}`)
      continue
    }
    t.fail(`byte ${i} of the zip flipped and the bundle still verified`)
  }
  t.equal(rejected, zip.byteLength, `all ${zip.byteLength} single-byte flips of the zip are rejected with a typed error`)

  const unpacked = await unpackBundle(built.out, join(root, 'flip-source'), opts)
  const files = ['manifest.json', 'manifest.jws', ...built.manifest.files.map(f => f.path)]
  const original = await repack(unpacked.dir, files, (_p, d) => d)
  t.ok(await verifyBundle(original, opts), 'a faithful repack still verifies, so what follows tests the flip alone')

  const flipAll = async (target: string, check: (err: any) => boolean): Promise<number> => {
    const size = (await readFile(join(unpacked.dir, target))).byteLength
    let count = 0
    for (let i = 0; i < size; i++) {
      const zipPath = await repack(unpacked.dir, files, (p, d) => {
        if (p !== target) return d
        const copy = Buffer.from(d)
        copy[i] = copy[i]! ^ 0x20
        return copy
      })
      try {
        await verifyBundle(zipPath, opts)
        t.fail(`${target} byte ${i} flipped and the bundle still verified`)
      } catch (err) {
        if (check(err)) count++
        else t.fail(`${target} byte ${i}: unexpected ${String(err)}`)
      }
      await rm(zipPath)
    }
    return count
  }
  const manifestSize = (await readFile(join(unpacked.dir, 'manifest.json'))).byteLength
  t.equal(await flipAll('manifest.json', err => err instanceof BundleSignatureError && err.entry === 'manifest.jws'), manifestSize,
    `all ${manifestSize} flips of manifest.json break the signature`)
  for (const f of built.manifest.files.filter(f => f.path.startsWith('model/'))) {
    t.equal(await flipAll(f.path, err => err instanceof HashMismatchError && err.entry === f.path), f.size,
      `all ${f.size} flips of ${f.path} are caught by its sha256, naming the file`)
  }
})

await t.test('after a pull proved every chunk, the zip is not hashed again; the signature and every file still are', async t => {
  const built = await build('layers')
  const { index } = await verifyBundle(built.out, opts)
  const proven = await verifyBundle(built.out, { ...opts, digest: built.digest, chunksVerified: index })
  t.equal(proven.digest, built.digest, 'the proven digest stands for the file')
  t.same(proven.manifest, built.manifest)

  const other = { ...index, hashes: index.hashes.map((h, i) => i === 0 ? 'f'.repeat(64) : h) }
  await t.rejects(verifyBundle(built.out, { ...opts, digest: built.digest, chunksVerified: other }), HashMismatchError,
    'a file whose index is not the one the pull checked is refused')

  // a peer may wrap a genuinely signed manifest round other bytes under a digest of its own: a pull of that
  // digest proves the bytes are the ones the digest names, not the ones the publisher signed
  const unpacked = await unpackBundle(built.out, join(root, 'proven-source'), opts)
  const target = built.manifest.files.find(f => f.path.startsWith('model/'))!.path
  const files = ['manifest.json', 'manifest.jws', ...built.manifest.files.map(f => f.path)]
  const forged = await repack(unpacked.dir, files, (p, d) => { if (p !== target) return d; const c = Buffer.from(d); c[0] = c[0]! ^ 0x20; return c })
  const raw = await readFile(forged)
  const forgedDigest = createHash('sha256').update(raw).digest('hex')
  // the index is the zip comment, after the end-of-central-directory record's 22 bytes
  const eocd = raw.lastIndexOf(Buffer.from('PK\x05\x06', 'latin1'))
  const forgedIndex = parseIndex(raw.subarray(eocd + 22, eocd + 22 + raw.readUInt16LE(eocd + 20)))
  await t.rejects(verifyBundle(forged, { ...opts, digest: forgedDigest, chunksVerified: forgedIndex }), { code: 'ERR_HASH_MISMATCH', entry: target },
    'its files are still checked against the signed manifest, naming the file')
})
