import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { fixture } from '../helpers/model-fixtures.ts'
import { dashboardLab, TEST_RESULTS } from '../helpers/browser.ts'
import { waitFor } from '../helpers/cluster.ts'
import { ANOMALY_FILES, ANOMALY_OUTPUTS, anomalyConfig } from '../helpers/model-upload.ts'
import { simulatedSensor } from '../helpers/scheduling.ts'

const PASSWORD = 'dashboard-developer-pw'

// a server, two gateways (one with a temperature sensor) and a coordinator as processes; Chromium uploads and deploys
const { cluster, coordinator, browser } = await dashboardLab(t)
await coordinator.addUser('dana', PASSWORD, { role: 'developer' })
await cluster.addNode('srv', { role: 'server' })
await cluster.addNode('gw1', { labels: { site: 'north' }, config: { sensors: [simulatedSensor('temp', 'temperature')] } })
await cluster.addNode('gw2', { labels: { site: 'south' } })
await Promise.all(['srv', 'gw1', 'gw2'].map(async n => await cluster.start(n)))
coordinator.init.bootstrap = [cluster.node('srv').multiaddr]
await coordinator.start()
const gw1 = cluster.node('gw1').peerId
const configFile = join(cluster.root, 'config.json')
await writeFile(configFile, JSON.stringify(anomalyConfig('temp')))

t.test('log in, upload a model with its config, deploy it with a window, see it running on the gateway', async t => {
  const page = await browser.context.newPage()
  const problems: string[] = []
  page.on('pageerror', err => { problems.push(err.message) })
  page.on('console', msg => { if (msg.type() === 'error') problems.push(msg.text()) })
  const hosts = new Set<string>()
  page.on('request', req => { hosts.add(new URL(req.url()).host) })

  await page.goto(coordinator.url)
  await page.fill('#username', 'dana')
  await page.fill('#password', PASSWORD)
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector('#nodes-view:visible')
  t.equal(await page.locator('#tabs button[data-tab="models"]').isVisible(), true, 'developers see the models tab')
  t.equal(await page.locator('#tabs button[data-tab="logs"]').isVisible(), true, 'developers see the logs tab')

  await page.click('#tabs button[data-tab="models"]')
  const form = '#model-form'
  await page.fill(`${form} input[name=name]`, 'anomaly')
  await page.fill(`${form} input[name=version]`, '1.0.0')
  await page.fill(`${form} input[name=deploymentType]`, 'gateway')
  await page.fill(`${form} input[name=modelType]`, 'anomaly detection')
  await page.fill(`${form} input[name=inputFormat]`, '16 temperature readings, °C')
  await page.fill(`${form} input[name=outputFormat]`, 'normal / anomaly')
  await page.fill(`${form} textarea[name=outputs]`, JSON.stringify(ANOMALY_OUTPUTS))
  await page.setInputFiles(`${form} input[name=model]`, ANOMALY_FILES)
  await page.setInputFiles(`${form} input[name=config]`, configFile)
  await page.click(`${form} button[type=submit]`)
  await page.waitForFunction(() => /^(Stored|Upload failed)/.test((globalThis as any).document.querySelector('#model-status').textContent), undefined, { timeout: 120_000 })
  t.match(await page.locator('#model-status').innerText(), /^Stored anomaly 1\.0\.0 \(tfjs-layers: .* → class\): bundle [0-9a-f]{12}… signed and published/, 'the page reports the upload')
  await page.waitForSelector('#models-list tr[data-model="anomaly"]')
  t.match(await page.locator('#models-list tr[data-model="anomaly"]').innerText(), /anomaly\s+1\.0\.0\s+tfjs-layers\s+1\.0\.0\s+dana\s+anomaly detection\s+gateway\s+16 temperature readings, °C → normal \/ anomaly/, 'listed live with its metadata, owned by the uploader')

  // an ONNX file, as PyTorch or skl2onnx writes one: its inputs and outputs are read from it
  await page.fill(`${form} input[name=name]`, 'mlp-onnx')
  await page.fill(`${form} input[name=version]`, '1')
  await page.setInputFiles(`${form} input[name=model]`, fixture('mlp.onnx'))
  await page.click(`${form} button[type=submit]`)
  await page.waitForFunction(() => /^(Stored mlp-onnx|Upload failed)/.test((globalThis as any).document.querySelector('#model-status').textContent), undefined, { timeout: 120_000 })
  t.match(await page.locator('#model-status').innerText(), /^Stored mlp-onnx 1 \(onnx: readings float32\[-1×16\] → scores\)/, 'an .onnx upload reports the specs read from the model')
  await page.waitForSelector('#models-list tr[data-model="mlp-onnx"]')
  t.match(await page.locator('#models-list tr[data-model="mlp-onnx"]').innerText(), /mlp-onnx\s+1\s+onnx\s+1\s+dana/, 'listed with its format')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-models.png'), fullPage: true })

  await page.click('#tabs button[data-tab="deployments"]')
  const d = '#deployment-form'
  await page.fill(`${d} input[name=id]`, 'hall')
  await page.selectOption(`${d} select[name=model]`, 'anomaly@1.0.0')
  await page.selectOption(`${d} select[name=role]`, 'gateway')
  await page.fill(`${d} input[name=sensorTypes]`, 'temperature')
  const local = (ms: number): string => { const x = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000); return x.toISOString().slice(0, 16) }
  await page.fill(`${d} input[name=start]`, local(Date.now() - 60_000))
  await page.fill(`${d} input[name=end]`, local(Date.now() + 3_600_000))
  await page.click(`${d} button[type=submit]`)
  await page.waitForFunction(() => /^Deployment (hall|failed)/.test((globalThis as any).document.querySelector('#deployment-status').textContent), undefined, { timeout: 30_000 })
  t.match(await page.locator('#deployment-status').innerText(), /^Deployment hall is in the mesh/, 'the page reports the deployment')
  const row = '#deployments-table tr[data-deployment="hall"]'
  await page.waitForSelector(`${row}[data-running="1"]`, { timeout: 120_000 })
  t.match(await page.locator(row).innerText(), /hall\s+anomaly 1\.0\.0\s+1 \/ 1/, 'the deployment runs one replica of one')
  t.equal(await page.locator(`${row} [data-node="${gw1}"] .state.running`).count(), 1, 'on the gateway with the temperature sensor, live over the event stream')
  t.match(await page.locator(row).innerText(), /active/, 'inside its window')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-deployments.png'), fullPage: true })
  t.pass(`screenshot saved to ${join(TEST_RESULTS, 'dashboard-deployments.png')}`)

  await page.click('#tabs button[data-tab="nodes"]')
  await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('#nodes-table tbody tr[data-role="gateway"][data-state="alive"]').length === 2, undefined, { timeout: 30_000 })
  t.equal(await page.locator('#nodes-table tbody tr[data-role="gateway"]').count(), 2, 'the gateways are listed')
  // the model status comes from the nodes view, which coalesces on its own timer: it may reach the page a delta after the deployment's
  const modelRow = '#models-table tr[data-model="anomaly"]'
  await page.waitForFunction(sel => /1 running/.test((globalThis as any).document.querySelector(sel)?.textContent ?? ''), modelRow, { timeout: 30_000 }).catch(() => {})
  t.match(await page.locator(modelRow).innerText({ timeout: 5_000 }), /1 running/, 'and the model running among them')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-gateways-running.png'), fullPage: true })

  const viaApi = await waitFor(async () => {
    const token = await coordinator.login('dana', PASSWORD)
    const res = await coordinator.request('GET', '/api/v1/deployments/hall', { token })
    return res.body?.running === 1 ? res.body : undefined
  }, 'the API to agree', 10_000)
  t.equal(viaApi.instances.find((i: any) => i.state === 'running').node, gw1, 'the API agrees with the page')
  t.same(problems, [], 'no script errors or CSP violations')
  t.same([...hosts], [new URL(coordinator.url).host], 'the page talked to the coordinator only')
})
