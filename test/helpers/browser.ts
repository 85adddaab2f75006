import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext } from 'playwright-core'
import type { Test } from 'tap'
import { Cluster } from './cluster.ts'
import { CoordinatorProcess } from './coordinator-process.ts'
import { markedEnv, watchdog } from './processes.ts'

/** Where browser tests leave screenshots (gitignored). */
export const TEST_RESULTS = new URL('../../test-results/', import.meta.url).pathname

/**
 * Debian's headless Chromium, driven by playwright-core, with a fresh
 * profile and everything that would reach out to the internet switched off.
 * Playwright kills the browser on close and on this process's exit; the
 * environment markers let the reaper (test/helpers/processes.ts) end it
 * and its helpers if this process is killed outright.
 */
export async function launchChromium (): Promise<{ context: BrowserContext, close: () => Promise<void> }> {
  const profile = await mkdtemp(join(tmpdir(), 'gm-chromium-'))
  await mkdir(TEST_RESULTS, { recursive: true })
  watchdog()
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    env: markedEnv(),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 900 },
    timeout: 60_000
  })
  return {
    context,
    async close () {
      await context.close().catch(() => {})
      await rm(profile, { recursive: true, force: true })
    }
  }
}

export interface DashboardLab {
  /** the test adds its nodes */
  cluster: Cluster
  /** on the cluster's fleet, in `<cluster root>/coordinator`; the test adds users and starts it */
  coordinator: CoordinatorProcess
  browser: Awaited<ReturnType<typeof launchChromium>>
}

/**
 * What every dashboard test drives: a cluster, a coordinator on its fleet
 * and headless Chromium, all ended when `t` ends (browser first, then the
 * coordinator, then the agents).
 */
export async function dashboardLab (t: Test): Promise<DashboardLab> {
  const cluster = await Cluster.create()
  const coordinator = new CoordinatorProcess({ dataDir: join(cluster.root, 'coordinator'), fleetDir: cluster.fleetDir })
  const browser = await launchChromium()
  t.teardown(async () => {
    await browser.close()
    await coordinator.stop()
    await cluster.close()
  })
  return { cluster, coordinator, browser }
}
