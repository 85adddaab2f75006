import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CLI } from '../helpers/cluster.ts'
import { saveLayersModel } from '../helpers/models.ts'
import { start } from '../helpers/processes.ts'

const root = await mkdtemp(join(tmpdir(), 'gatemesh-cli-'))
t.teardown(async () => { await rm(root, { recursive: true, force: true }) })

async function cli (...args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const { child } = start(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], t })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', d => { stdout += String(d) })
  child.stderr!.on('data', d => { stderr += String(d) })
  const code = await new Promise<number | null>(resolve => child.on('close', resolve))
  return { code, stdout, stderr }
}

const fleet = join(root, 'fleet')
if ((await cli('fleet', 'init', fleet)).code !== 0) throw new Error('fleet init failed')
await saveLayersModel(join(root, 'model'))
await writeFile(join(root, 'config.json'), JSON.stringify({ threshold: 0.9 }))
await writeFile(join(root, 'act.js'), 'console.log("act")\n')

await t.test('build, verify, inspect with the fleet key', async t => {
  const out = join(root, 'demo.zip')
  const built = await cli('bundle', 'build', join(root, 'model'), '--name', 'demo', '--version', '1.2.0', '--config', join(root, 'config.json'), '--action', join(root, 'act.js'), '--key', join(fleet, 'fleet.key'), '--out', out)
  t.equal(built.code, 0, `build exits 0 ${built.stderr}`)
  const digest = /digest\s+([0-9a-f]{64})/.exec(built.stdout)?.[1]
  t.ok(digest, 'build prints the digest')

  const verified = await cli('bundle', 'verify', out, '--fleet-pub', join(fleet, 'fleet.pub'), '--json')
  t.equal(verified.code, 0)
  t.match(JSON.parse(verified.stdout), { ok: true, digest, signer: 'fleet', name: 'demo', version: '1.2.0' })

  const inspected = await cli('bundle', 'inspect', out, '--fleet-pub', join(fleet, 'fleet.pub'))
  t.equal(inspected.code, 0)
  t.match(inspected.stdout, /demo@1\.2\.0/)
  t.match(inspected.stdout, /signer\s+fleet \(verified\)/)
  t.match(inspected.stdout, /model\/group1-shard1of1\.bin/)
  t.match(inspected.stdout, /action\.js/)

  const bytes = await readFile(out)
  bytes[100] = bytes[100]! ^ 0xff
  const tampered = join(root, 'tampered.zip')
  await writeFile(tampered, bytes)
  const refused = await cli('bundle', 'verify', tampered, '--fleet-pub', join(fleet, 'fleet.pub'))
  t.equal(refused.code, 1, 'a tampered bundle fails verification with exit code 1')
  t.match(refused.stderr, /chunk 0 .* does not match the chunk index/)

  const wrongDigest = await cli('bundle', 'verify', out, '--fleet-pub', join(fleet, 'fleet.pub'), '--digest', '0'.repeat(64))
  t.equal(wrongDigest.code, 1, 'a bundle that is not the one asked for fails')
})

await t.test('a certified publisher signs bundles', async t => {
  const pub = join(root, 'publisher')
  const made = await cli('fleet', 'publisher', fleet, 'vision-team', '--out', pub)
  t.equal(made.code, 0, made.stderr)
  const out = join(root, 'pub.zip')
  const built = await cli('bundle', 'build', join(root, 'model'), '--name', 'demo', '--version', '2', '--key', join(pub, 'publisher.key'), '--cert', join(pub, 'publisher.cert'), '--out', out)
  t.equal(built.code, 0, built.stderr)
  t.match(built.stdout, /signed by vision-team/)
  const verified = await cli('bundle', 'verify', out, '--fleet-pub', join(fleet, 'fleet.pub'), '--json')
  t.equal(JSON.parse(verified.stdout).signer, 'vision-team')
})

await t.test('bad input is a clear error', async t => {
  const noModel = await cli('bundle', 'build', root, '--name', 'x', '--version', '1', '--key', join(fleet, 'fleet.key'), '--out', join(root, 'x.zip'))
  t.equal(noModel.code, 1)
  t.match(noModel.stderr, /model\.json/)
  await writeFile(join(root, 'model', 'bad.json'), JSON.stringify({ format: 'layers-model', modelTopology: { class_name: 'Sequential', config: { layers: [{ class_name: 'Nope', config: {} }] } }, weightsManifest: [] }))
  const broken = await cli('bundle', 'build', join(root, 'model'), '--model-file', 'bad.json', '--name', 'x', '--version', '1', '--key', join(fleet, 'fleet.key'), '--out', join(root, 'x.zip'))
  t.equal(broken.code, 1, 'a model TensorFlow.js cannot load is refused before signing')
  t.match(broken.stderr, /bad\.json: TensorFlow.js cannot load this tfjs-layers model: Unknown layer: Nope/)
  const badName = await cli('bundle', 'build', join(root, 'model'), '--name', 'Bad Name', '--version', '1', '--key', join(fleet, 'fleet.key'), '--out', join(root, 'x.zip'))
  t.equal(badName.code, 1)
  t.match(badName.stderr, /manifest\.name/)
  const usage = await cli('bundle', 'verify', join(root, 'demo.zip'))
  t.equal(usage.code, 2, 'a missing flag is a usage error')
  t.match(usage.stderr, /--fleet-pub/)
})
