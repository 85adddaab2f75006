import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { loadFleet } from '../../node/identity/fleet.ts'
import { REPO_ROOT } from '../../packaging/app-bundle.ts'
import { bundleCommand } from '../helpers/app-bundle.ts'
import { dashboardLab, TEST_RESULTS } from '../helpers/browser.ts'
import { budget } from '../helpers/budget.ts'
import { waitFor } from '../helpers/cluster.ts'
import { run } from '../helpers/processes.ts'
import { flashedDevice, releaseZip } from '../helpers/release-device.ts'

/**
 * The dashboard's rollouts view against a real coordinator and real agents:
 * a device runs release 1.0.0 from an image layout (the image's loader and
 * unit; see test/integration/rollout.test.ts), a seed agent holds release
 * 1.2.0, which exits at start. An admin rolls 1.2.0 out from the page (a
 * refused request first, its field marked), watches the device roll back
 * and the rollout halt live, raises its failure budget, pauses, resumes
 * and aborts it; a developer sees it all and can change nothing.
 */
const ADMIN_PASSWORD = 'rollouts-admin-password'
const DEV_PASSWORD = 'rollouts-dev-password'

// under the repository: the releases' app resolves its external modules from its node_modules
const work = await mkdtemp(join(REPO_ROOT, 'dist', 'rollouts-dashboard-test-'))
// teardowns run last added first: the lab's processes end before their files go
t.teardown(async () => { if (process.env.GATEMESH_KEEP_TEST_DIRS == null) await rm(work, { recursive: true, force: true }) })
const { cluster, coordinator, browser } = await dashboardLab(t)

const fleet = await loadFleet(cluster.fleetDir)
const signer = { key: fleet.privateKey }
const v1 = await releaseZip(work, '1.0.0', signer)
const bad = await releaseZip(work, '1.2.0', signer, { app: 'console.error("1.2.0 cannot start"); process.exit(1)\n' })
const cli = await bundleCommand()
const gatemesh = async (...args: string[]): Promise<string> => (await run(cli.exec, [...cli.args, ...args], { timeoutMs: budget(60_000) })).stdout

await coordinator.addUser('admin', ADMIN_PASSWORD, { admin: true })
await coordinator.addUser('dev', DEV_PASSWORD, { role: 'developer' })
await cluster.addNode('seed', { role: 'server' })
await cluster.start('seed')
const d1 = await cluster.addNode('d1', { bootstrap: ['seed'], labels: { zone: 'lab' } })
const device = await flashedDevice(join(work, 'd1'), { dataDir: d1.dir, first: { file: v1.file, version: '1.0.0' }, fleetPublicKey: fleet.publicKey })
t.teardown(async () => { await device.unit.stop() })
device.unit.start()
coordinator.init.bootstrap = [cluster.node('seed').multiaddr]
await coordinator.start()
await waitFor(async () => (await cluster.get<{ record: { managed: boolean } }>('d1', '/v1/release').catch(() => undefined))?.record.managed === true, 'd1 to run 1.0.0 under its loader', budget(120_000), 500)
await gatemesh('release', 'publish', bad.file, '--data', cluster.node('seed').dir)

/** A fresh page (its own session storage: its own login) that records script errors and CSP violations. */
async function loggedIn (username: string, password: string): Promise<{ page: Awaited<ReturnType<typeof browser.context.newPage>>, problems: string[] }> {
  const page = await browser.context.newPage()
  const problems: string[] = []
  page.on('pageerror', err => { problems.push(err.message) })
  page.on('console', msg => { if (msg.type() === 'error' && !/status of 40[03]/.test(msg.text())) problems.push(msg.text()) })
  await page.goto(coordinator.url)
  await page.fill('#username', username)
  await page.fill('#password', password)
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector('#live.on', { timeout: 30_000 })
  await page.click('#tabs button[data-tab="rollouts"]')
  return { page, problems }
}

t.test('an admin rolls a release out from the page and steers it; the page follows live', async t => {
  const { page, problems } = await loggedIn('admin', ADMIN_PASSWORD)
  const option = `#rollout-releases option[value="${bad.digest}"]`
  // the coordinator learns of the seed's copy through the registry; the list is read when the view opens
  await waitFor(async () => {
    if (await page.locator(option).count() > 0) return true
    await page.click('#tabs button[data-tab="nodes"]')
    await page.click('#tabs button[data-tab="rollouts"]')
    return false
  }, 'the release to be listed', budget(30_000), 1000)
  t.match(await page.locator(option).innerText(), /^1\.2\.0 · .* on 1 node · /, 'the release bundle the seed holds, with its version and holders')
  t.equal(await page.locator('#rollouts-empty').isVisible(), true, 'no rollouts yet, and the page says how to make one')

  const form = '#rollout-form'
  await page.selectOption(`${form} select[name=releases]`, bad.digest)
  await page.fill(`${form} input[name=id]`, 'r-bad')
  await page.fill(`${form} input[name=waves]`, '50,40,100')
  await page.fill(`${form} input[name=maxFailures]`, '0')
  await page.fill(`${form} input[name=healthDeadlineSec]`, '60')
  await page.click(`${form} button[type=submit]`)
  await page.waitForFunction(() => /^Rollout (refused|r-bad)/.test((globalThis as any).document.querySelector('#rollout-status').textContent), undefined, { timeout: budget(60_000) })
  t.match(await page.locator('#rollout-status').innerText(), /^Rollout refused: body\.waves\[1\]/, 'the API refused the waves')
  t.match(await page.locator(`${form} [data-error-for="waves"]`).innerText(), /body\.waves\[1\]/, 'the message sits by the waves field')
  t.equal(await page.locator(`${form} input[name=waves]`).getAttribute('aria-invalid'), 'true', 'which is marked')
  t.equal(await page.locator('#rollouts-list [data-rollout]').count(), 0, 'and nothing was written')

  await page.fill(`${form} input[name=waves]`, '100')
  await page.click(`${form} button[type=submit]`)
  await page.waitForFunction(() => /^Rollout r-bad/.test((globalThis as any).document.querySelector('#rollout-status').textContent), undefined, { timeout: budget(60_000) })
  t.match(await page.locator('#rollout-status').innerText(), /^Rollout r-bad \(1\.2\.0\) is signed and in the mesh: 1 target in 1 wave/, 'the page reports the rollout')
  t.equal(await page.locator(`${form} input[name=waves]`).getAttribute('aria-invalid'), null, 'the field is no longer marked')

  const card = '#rollouts-list [data-rollout="r-bad"]'
  await page.evaluate(() => { (globalThis as any).__samePage = true })
  // the device pulls 1.2.0, restarts into it, and its loader rolls it back: the event stream brings each step
  await page.waitForSelector(`${card}[data-phase="halted"]`, { timeout: budget(240_000) })
  t.equal(await page.evaluate(() => (globalThis as any).__samePage), true, 'the rollout halted on the same page, through the event stream')
  const target = `${card} tr[data-peer="${d1.peerId}"]`
  t.equal(await page.locator(target).getAttribute('data-outcome'), 'failed', 'd1 failed')
  t.match(await page.locator(target).innerText(), /1\s+x64\s+failed\s+1\.0\.0\s+rolled-back\s+rolled back from 1\.2\.0 to 1\.0\.0: /, `with the loader's reason, back on 1.0.0: ${await page.locator(target).innerText()}`)
  t.match(await page.locator(`${card} tr[data-peer="${cluster.node('seed').peerId}"]`).innerText(), /excluded\s+.*not started by an image's loader/, 'the seed is excluded, and the page says why')
  t.match(await page.locator(`${card} [data-failures]`).innerText(), /^1 failed, 0 allowed$/)
  t.match(await page.locator(`${card} [data-wave="0"]`).innerText(), /Wave 1 · 100%\s+0\/1 done, 1 failed · started/, 'the wave\'s progress')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-rollout-halted.png'), fullPage: true })
  t.pass(`screenshot saved to ${join(TEST_RESULTS, 'dashboard-rollout-halted.png')}`)

  const admin = await coordinator.login('admin', ADMIN_PASSWORD)
  const record = async (): Promise<any> => (await coordinator.request('GET', '/api/v1/rollouts/r-bad', { token: admin })).body
  // a failure budget that is allowed is no longer exceeded: nothing is left to do, so the rollout is done
  await page.fill(`${card} input[data-max-failures]`, '1')
  await page.click(`${card} button[data-action="budget"]`)
  await page.waitForSelector(`${card}[data-phase="done"]`, { timeout: budget(30_000) })
  t.equal((await record()).spec.maxFailures, 1, 'the record allows one failure now')
  t.match(await page.locator('#rollout-action-status').innerText(), /^Rollout r-bad allows 1 failure now; the record is signed again/)

  await page.click(`${card} button[data-action="pause"]`)
  await page.waitForSelector(`${card}[data-phase="paused"]`, { timeout: budget(30_000) })
  t.equal((await record()).spec.state, 'paused', 'pause rewrote the record')
  await page.click(`${card} button[data-action="resume"]`)
  await page.waitForSelector(`${card}[data-phase="done"]`, { timeout: budget(30_000) })
  t.equal((await record()).spec.state, 'active', 'resume rewrote it again')

  page.once('dialog', dialog => { void dialog.accept() })
  await page.click(`${card} button[data-action="abort"]`)
  await page.waitForSelector(`${card}[data-phase="aborted"]`, { timeout: budget(30_000) })
  t.equal((await record()).spec.state, 'aborted', 'abort rewrote it for good')
  t.equal(await page.locator(`${card} button[data-action]`).count(), 0, 'an aborted rollout offers no more actions')
  const seen = await cluster.get<{ rollouts: Array<{ id: string, phase: string }> }>('d1', '/v1/rollouts')
  t.equal(seen.rollouts.find(r => r.id === 'r-bad')?.phase, 'aborted', 'the device holds the aborted record too')
  await page.screenshot({ path: join(TEST_RESULTS, 'dashboard-rollout-aborted.png'), fullPage: true })
  t.same(problems, [], 'no script errors or CSP violations')
  await page.close()
})

t.test('a developer sees rollouts and cannot change them', async t => {
  const { page, problems } = await loggedIn('dev', DEV_PASSWORD)
  const card = '#rollouts-list [data-rollout="r-bad"]'
  await page.waitForSelector(`${card}[data-phase="aborted"]`, { timeout: 30_000 })
  t.match(await page.locator(`${card} tr[data-peer="${d1.peerId}"]`).innerText(), /failed\s+1\.0\.0\s+rolled-back\s+rolled back from 1\.2\.0/, 'the outcome and its reason')
  t.equal(await page.locator('#rollout-form').isVisible(), false, 'no form to create one')
  t.equal(await page.locator('#rollouts-list button[data-action]').count(), 0, 'no buttons to change one')
  t.equal(await page.locator('#rollouts-readonly').isVisible(), true, 'the page says why')
  const token = await coordinator.login('dev', DEV_PASSWORD)
  t.equal((await coordinator.request('PATCH', '/api/v1/rollouts/r-bad', { token, body: { maxFailures: 5 } })).status, 403, 'and the API refuses a developer, whatever the page shows')
  t.equal((await coordinator.request('GET', '/api/v1/releases', { token })).body.releases[0].digest, bad.digest, 'the release list is theirs to read')
  t.same(problems, [], 'no script errors or CSP violations')
  await page.close()
})
