import { createHash } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { buildBundle, chunkCount, chunkRange, type BuiltBundle } from '../../packaging/bundle/index.ts'
import { loadTf } from '../../packaging/tfjs/backend.ts'
import { fileSaveHandler } from '../../packaging/tfjs/file-io.ts'
import { CLI, Cluster, waitFor } from '../helpers/cluster.ts'
import { fleetAuth } from '../helpers/scheduling.ts'
import { start } from '../helpers/processes.ts'

const MiB = 1024 * 1024
// every agent serves at most 3 MiB/s, so a 32 MiB pull takes seconds and can be interrupted
const config = { logs: { stdout: false, level: 'debug' }, bundles: { uploadBytesPerSec: 3 * MiB } }

const cluster = await Cluster.create()
t.teardown(async () => { await cluster.close() })
const providers = ['a', 'b', 'c']
for (const n of [...providers, 'd', 'e', 'f', 'g']) await cluster.addNode(n, { config })
await Promise.all([...cluster.nodes.keys()].map(async n => await cluster.start(n)))

// a real TF.js layers model of ~32 MiB: one dense layer
const { tf } = await loadTf()
const units = 2896
const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [units], units, name: 'wide' })] })
await model.save(fileSaveHandler(tf, join(cluster.root, 'model')))
model.dispose()
const fleet = await loadFleet(cluster.fleetDir)
const built: BuiltBundle = await buildBundle({ modelDir: join(cluster.root, 'model'), name: 'wide', version: '1.0.0', signer: { key: fleet.privateKey }, out: join(cluster.root, 'wide.zip') })
const digest = built.digest
const chunks = chunkCount(built.index)

interface View { state: string, size: number, transfer?: { state: string, chunksHave: number, chunks: number, resumedChunks: number, fetchedChunks: number, corruptChunks: number, providers: Array<{ peer: string, state: string, chunks: number, error?: string }> } }
const view = async (n: string): Promise<View> => await cluster.get<View>(n, `/v1/bundles/${digest}`)
const pull = async (n: string): Promise<void> => {
  const res = await cluster.request(n, 'POST', `/v1/bundles/${digest}/pull`)
  if (res.status !== 202 && res.status !== 200) throw new Error(`pull on ${n}: ${res.status} ${JSON.stringify(res.body)}`)
}
const complete = async (n: string, timeoutMs = 60_000): Promise<View> => await waitFor(async () => {
  const v = await view(n)
  if (v.transfer?.state === 'failed') throw new Error(`pull on ${n} failed: ${JSON.stringify(v.transfer)}`)
  return v.state === 'complete' ? v : undefined
}, `${n} to hold the bundle`, timeoutMs)
const fileDigest = async (n: string): Promise<string> => createHash('sha256').update(await readFile(join(cluster.node(n).dir, 'bundles', `${digest}.zip`))).digest('hex')
const metric = async (n: string, name: string): Promise<Map<string, number>> => {
  const text = await (await fetch(cluster.node(n).api + '/metrics')).text()
  return new Map(text.split('\n').filter(l => l.startsWith(name)).map(l => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]))
}
const providersSeen = async (n: string, count: number): Promise<void> => {
  await waitFor(async () => (await cluster.get(n, `/v1/registry?prefix=bundle/${digest}/`)).count >= count, `${n} to see ${count} providers`)
}

await t.test('publish: each provider verifies, stores and advertises the signed bundle', async t => {
  const zip = await readFile(built.out)
  for (const n of providers) {
    const res = await fetch(`${cluster.node(n).api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth(n) }, body: zip })
    t.equal(res.status, 201, `${n} accepted the bundle`)
    t.match(await res.json(), { digest, state: 'complete', signer: 'fleet', name: 'wide' })
  }
  const again = await fetch(`${cluster.node('a').api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('a') }, body: zip })
  t.equal(again.status, 200, 'publishing the same bundle twice is idempotent')

  const tampered = Buffer.from(zip)
  tampered[4096] = tampered[4096]! ^ 1
  const bad = await fetch(`${cluster.node('a').api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('a') }, body: tampered })
  t.equal(bad.status, 422, 'a tampered bundle is refused')
  t.match(await bad.json(), { code: 'ERR_HASH_MISMATCH' })
  t.equal((await cluster.get('a', '/v1/bundles')).count, 1, 'nothing of the refused upload was stored')
  t.equal((await cluster.request('a', 'GET', `/v1/bundles/${'0'.repeat(64)}`)).status, 404, 'an unknown digest is 404')
  await providersSeen('d', 3)
})

await t.test('three providers serve one bundle to a fourth agent in parallel (through the CLI)', async t => {
  const { child } = start(process.execPath, [CLI, 'bundle', 'pull', digest, '--api', cluster.node('d').api, '--data', cluster.node('d').dir, '--interval', '250'], { stdio: ['ignore', 'pipe', 'pipe'], t })
  let out = ''
  child.stdout!.on('data', d => { out += String(d) })
  child.stderr!.on('data', d => { out += String(d) })
  const code = await new Promise(resolve => child.on('close', resolve))
  t.equal(code, 0, `gatemesh bundle pull exits 0 (${out.trim().split("\n").pop() ?? ""})`)
  t.match(out, /pulling [0-9a-f]{12}: .* from \d provider\(s\)/, 'plain progress lines when stdout is not a terminal')
  t.match(out, /pulled wide@1\.0\.0/)
  const v = await view('d')
  t.equal(v.state, 'complete')
  t.equal(await fileDigest('d'), digest, 'd holds exactly the published bytes')
  const served = v.transfer!.providers.filter(p => p.chunks > 0)
  t.equal(served.length, 3, `chunks came from all three providers (${v.transfer!.providers.map(p => `${p.peer.slice(-6)}:${p.chunks}`).join(', ')})`)
  t.equal(v.transfer!.fetchedChunks, chunks, 'every chunk fetched exactly once')
  t.equal(v.transfer!.corruptChunks, 0)
  const out2 = await Promise.all(providers.map(async n => (await metric(n, 'gatemesh_bundle_chunks_total')).get(`gatemesh_bundle_chunks_total{direction="out",node="${cluster.node(n).peerId.slice(-8)}"}`) ?? 0))
  t.ok(out2.every(c => c > 0), `each provider's metrics count chunks served (${out2.join(', ')})`)
})

await t.test('killing one provider mid-transfer still completes', async t => {
  await providersSeen('e', 4)
  await pull('e')
  await waitFor(async () => ((await view('e')).transfer?.chunksHave ?? 0) >= chunks / 4, 'e to get a quarter of the chunks')
  cluster.kill('b')
  const before = (await view('e')).transfer!.chunksHave
  t.ok(before < chunks, `b killed with ${before}/${chunks} chunks at e`)
  const v = await complete('e')
  t.equal(await fileDigest('e'), digest, 'e holds exactly the published bytes')
  const b = v.transfer!.providers.find(p => p.peer === cluster.node('b').peerId)
  t.equal(b?.state, 'failed', `e saw b fail (${b?.error ?? ''})`)
  await cluster.start('b')
})

await t.test('killing the pulling agent mid-transfer and restarting it resumes without re-fetching verified chunks', async t => {
  await providersSeen('f', 5)
  await pull('f')
  await waitFor(async () => ((await view('f')).transfer?.chunksHave ?? 0) >= chunks * 0.25, 'f to get a quarter of the chunks', 20_000, 50)
  // progress is flushed every 250 ms; let a flush land, then kill without warning
  await new Promise(resolve => setTimeout(resolve, 300))
  const atKill = (await view('f')).transfer!.chunksHave
  cluster.kill('f')
  t.ok(atKill < chunks, `f killed with ${atKill}/${chunks} chunks verified`)
  await new Promise(resolve => setTimeout(resolve, 300))
  await cluster.start('f')
  const v = await complete('f')
  const tr = v.transfer!
  // a chunk counts as held only once written, so everything counted before the kill is found again
  t.ok(tr.resumedChunks >= atKill, `resumed ${tr.resumedChunks} chunks from disk (had ${atKill} when killed)`)
  t.equal(tr.fetchedChunks, chunks - tr.resumedChunks, `fetched only the ${chunks - tr.resumedChunks} missing chunks after the restart`)
  t.equal(await fileDigest('f'), digest, 'f holds exactly the published bytes')
  const log = (await readFile(join(cluster.node('f').dir, 'logs', 'agent.log'), 'utf8')).split('\n').filter(l => l.includes('resuming bundle transfer'))
  t.equal(log.length, 1, 'the restarted agent resumed the pull on its own')
})

await t.test('a provider serving corrupted chunks is detected, banned and counted; the chunks come from elsewhere', async t => {
  // flip one byte in every chunk of c's stored copy: whatever c serves is corrupt
  const c = cluster.node('c')
  const fh = await open(join(c.dir, 'bundles', `${digest}.zip`), 'r+')
  for (let i = 0; i < chunks; i++) {
    const { start, end } = chunkRange(built.index, i)
    const at = start + Math.floor((end - start) / 2)
    const b = Buffer.alloc(1)
    await fh.read(b, 0, 1, at)
    b[0] = b[0]! ^ 0xff
    await fh.write(b, 0, 1, at)
  }
  await fh.close()
  await providersSeen('g', 6)
  await pull('g')
  const v = await complete('g')
  t.equal(await fileDigest('g'), digest, 'g still ends with exactly the published bytes')
  const bad = v.transfer!.providers.find(p => p.peer === c.peerId)
  t.equal(bad?.state, 'banned', `g banned c (${bad?.error ?? 'not contacted'})`)
  t.ok(v.transfer!.corruptChunks >= 1, `${v.transfer!.corruptChunks} corrupt chunk(s) detected`)
  t.equal(v.transfer!.fetchedChunks, chunks, 'every chunk was still fetched and verified once')
  const counted = await metric('g', 'gatemesh_bundle_corrupt_chunks_total')
  const entries = [...counted.entries()]
  t.ok(entries.length === 1 && entries[0]![0].includes(`provider="${c.peerId}"`) && entries[0]![1] >= 1, `the metric counts c and only c: ${JSON.stringify(entries)}`)
})

await t.test('the registry carries one advert per holder, and a stopped agent keeps its bundles', async t => {
  const adverts = (await cluster.get('a', `/v1/registry?prefix=bundle/${digest}/`)).entries as Array<{ key: string, writer: string, value: { complete: boolean, size: number } }>
  t.ok(adverts.every(e => e.key.endsWith(`/${e.writer}`)), 'each advert is written by the holder it names')
  t.ok(adverts.every(e => e.value.complete && e.value.size === built.size), 'adverts say complete with the right size')
  const forged = await cluster.request('a', 'PUT', `/v1/registry/bundle/${digest}/${cluster.node('d').peerId}`, { value: { complete: true, size: 1 } })
  t.equal(forged.status, 403, 'an agent cannot advertise on behalf of another')
  await cluster.stop('d')
  await cluster.start('d')
  t.equal((await view('d')).state, 'complete', 'd still holds the bundle after a restart')
})

await t.test('unused bundles are evicted past the store budget; referenced ones are kept', async t => {
  const small = await cluster.addNode('small', { config: { logs: { stdout: false }, bundles: { maxStoreBytes: Math.ceil(built.size * 1.5) } } })
  await cluster.start('small')
  const zip = await readFile(built.out)
  const first = await fetch(`${small.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('small') }, body: zip })
  t.equal(first.status, 201)
  // a second, different bundle of the same size does not fit beside the first
  const variant = async (version: string): Promise<BuiltBundle> => await buildBundle({ modelDir: join(cluster.root, 'model'), name: 'wide', version, signer: { key: fleet.privateKey }, out: join(cluster.root, `wide-${version}.zip`), validate: false, inputs: built.manifest.inputs, outputs: built.manifest.outputs })
  const other = await variant('2.0.0')
  const second = await fetch(`${small.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('small') }, body: await readFile(other.out) })
  t.equal(second.status, 201, 'the new bundle is stored')
  const held = (await cluster.get('small', '/v1/bundles')).bundles.map((b: { digest: string }) => b.digest)
  t.same(held, [other.digest], 'the unreferenced older bundle was evicted to make room')
  await waitFor(async () => (await cluster.get('small', `/v1/registry?prefix=bundle/${digest}/${small.peerId}`)).count === 0, 'the evicted bundle\'s advert to go')
  t.pass('its advert was withdrawn')

  // a deployment now refers to the held bundle: it must survive, so a third one does not fit
  const deployment = { model: { name: 'wide', version: '2.0.0' }, replicas: 1 }
  const auth = await fleetAuth(cluster, 'small', 'deployment/wide', JSON.stringify(deployment), fleet.privateKey)
  t.equal((await cluster.request('small', 'PUT', '/v1/registry/deployment/wide', { value: deployment, auth })).status, 200)
  const third = await variant('3.0.0')
  const refused = await fetch(`${small.api}/v1/bundles`, { method: 'POST', headers: { 'content-type': 'application/zip', ...await cluster.auth('small') }, body: await readFile(third.out) })
  t.equal(refused.status, 507, 'no room: the referenced bundle is not evicted')
  t.match(await refused.json(), { code: 'ERR_STORE_FULL' })
  t.same((await cluster.get('small', '/v1/bundles')).bundles.map((b: { digest: string }) => b.digest), [other.digest], 'the referenced bundle is still held')
})
