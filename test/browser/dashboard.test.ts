import { join } from 'node:path'
import t from 'tap'
import { dashboardLab, TEST_RESULTS } from '../helpers/browser.ts'
import { waitFor } from '../helpers/cluster.ts'

const ADMIN_PASSWORD = 'dashboard-admin-password'

// a server, two gateways and a coordinator as processes; Chromium drives the dashboard
const { cluster, coordinator, browser } = await dashboardLab(t)

// the first admin made with the CLI before the first start
await coordinator.addUser('admin', ADMIN_PASSWORD, { admin: true })
await cluster.addNode('srv', { role: 'server', labels: { zone: 'lab' } })
await cluster.addNode('gw1', { labels: { zone: 'lab', site: 'north' }, config: { logs: { stdout: false, level: 'debug' }, sensors: [{ id: 'temp-hall', type: 'simulated', unit: '°C', geo: { lat: 48.1, lon: 11.6 }, offset: 21, amplitude: 2 }] } })
await cluster.addNode('gw2', { labels: { zone: 'lab', site: 'south' } })
await Promise.all(['srv', 'gw1', 'gw2'].map(async n => await cluster.start(n)))
coordinator.init.bootstrap = [cluster.node('srv').multiaddr]
await coordinator.start()
const gw1 = cluster.node('gw1').peerId
const gw2 = cluster.node('gw2').peerId

t.test('log in, see the gateways live, their sensors, and search the logs', async t => {
  t.equal(coordinator.printedPassword(), undefined, 'no generated password when `user add` made the admin')
  const page = await browser.context.newPage()
  const problems: string[] = []
  page.on('pageerror', err => { problems.push(err.message) })
  page.on('console', msg => { if (msg.type() === 'error') problems.push(msg.text()) })
  const requests = new Set<string>()
  page.on('request', req => { requests.add(new URL(req.url()).host) })

  await page.goto(coordinator.url)
  await page.fill('#username', 'admin')
  await page.fill('#password', 'wrong password!')
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector('#login-error:text("Wrong username or password.")')
  t.pass('a wrong password is refused on the page')
  // the browser reports the refused login's 401 as a console error: expected, so not a problem
  problems.length = 0
  await page.fill('#password', ADMIN_PASSWORD)
  await page.click('#login-form button[type=submit]')

  const gatewayRows = '#nodes-table tbody tr[data-role="gateway"][data-state="alive"]'
  // functions passed to the page run there (serialised): no closures; `globalThis` is the window
  await page.waitForFunction(sel => (globalThis as any).document.querySelectorAll(sel).length === 2, gatewayRows, { timeout: 30_000 })
  t.equal(await page.locator(gatewayRows).count(), 2, 'both gateways are listed as alive')
  t.equal(await page.locator('#nodes-table tbody tr[data-role="server"]').count(), 1, 'and the server')
  t.match(await page.locator(`#nodes-table tr[data-peer="${gw1}"]`).innerText(), /site=north/)
  t.equal(await page.locator('#user-name').innerText(), 'admin')
  await page.waitForSelector('#live.on')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-gateways.png'), fullPage: true })
  t.pass(`screenshot saved to ${join(TEST_RESULTS, 'dashboard-gateways.png')}`)

  // live status: a gateway goes away and the page follows without a reload
  await page.evaluate(() => { (globalThis as any).__samePage = true })
  await cluster.stop('gw2')
  await page.waitForSelector(`#nodes-table tr[data-peer="${gw2}"][data-state="dead"]`, { timeout: 30_000 })
  t.equal(await page.evaluate(() => (globalThis as any).__samePage), true, 'gw2 turned dead on the same page, through the event stream')
  t.equal(await page.locator(`#nodes-table tr[data-peer="${gw1}"]`).getAttribute('data-state'), 'alive')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-gateway-down.png'), fullPage: true })

  await page.click('#tabs button[data-tab="sensors"]')
  await page.waitForSelector('#sensors-table tr[data-sensor="temp-hall"]')
  t.match(await page.locator('#sensors-table tr[data-sensor="temp-hall"]').innerText(), /simulated\s+°C\s+\{"lat":48.1,"lon":11.6\}/, 'gw1\'s sensor from its config, with type, unit and location')

  await page.click('#tabs button[data-tab="logs"]')
  await page.fill('#logs-form input[name=text]', 'agent started')
  await page.click('#logs-form button[type=submit]')
  await page.waitForFunction(ids => ids.every(id => (globalThis as any).document.querySelector(`#logs-table tr[data-node="${id}"]`) != null), [gw1, cluster.node('srv').peerId], { timeout: 20_000 })
  t.match(await page.locator('#logs-status').innerText(), /not searched: .*dead/, 'the page says which node could not be searched')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-logs.png'), fullPage: true })

  await page.click('#logout')
  await page.waitForSelector('#login-form', { state: 'visible' })
  t.same(problems, [], 'no script errors or CSP violations')
  t.same([...requests], [new URL(coordinator.url).host], 'the page talked to the coordinator only')
})

t.test('an admin revokes a gateway from the dashboard', async t => {
  const page = await browser.context.newPage()
  const problems: string[] = []
  page.on('pageerror', err => { problems.push(err.message) })
  page.on('dialog', dialog => { void dialog.accept('lost in transit') })
  await page.goto(coordinator.url)
  await page.fill('#username', 'admin')
  await page.fill('#password', ADMIN_PASSWORD)
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector(`#nodes-table tr[data-peer="${gw2}"] button[data-revoke]`, { timeout: 30_000 })
  t.equal(await page.locator(`#nodes-table tr[data-peer="${cluster.node('srv').peerId}"] button[data-revoke]`).count(), 1, 'every node but the coordinator has a Revoke button')
  await page.click(`#nodes-table tr[data-peer="${gw2}"] button[data-revoke]`)
  await page.waitForSelector(`#revoked-table tr[data-revoked="${gw2}"]`, { timeout: 30_000 })
  t.match(await page.locator(`#revoked-table tr[data-revoked="${gw2}"]`).innerText(), /admin\s+lost in transit/, 'listed as revoked, by whom and why')
  await page.waitForFunction(id => (globalThis as any).document.querySelector(`#nodes-table tr[data-peer="${id}"]`) == null, gw2, { timeout: 30_000 })
  t.pass('gone from the nodes table')
  await waitFor(async () => (await cluster.get('srv', '/v1/status')).denied.some((d: any) => d.peerId === gw2 && /revoked: lost in transit/.test(d.reason)), 'the server to refuse gw2', 30_000)
  t.pass('the agents refuse it')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-revoked.png'), fullPage: true })
  t.same(problems, [], 'no script errors')
})
