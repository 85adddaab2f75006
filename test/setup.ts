/**
 * Run once before the test files (`npm test`'s pretest, test/loop.sh): build the app bundle
 * the tests start agents and coordinators from, so that test files running
 * in parallel find it ready instead of each building it.
 */
import { testBundle } from './helpers/app-bundle.ts'

const started = performance.now()
const entry = await testBundle()
console.log(`app bundle for the tests: ${entry} (${((performance.now() - started) / 1000).toFixed(1)} s)`)
