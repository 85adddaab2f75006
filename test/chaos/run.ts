/**
 * `npm run chaos -- [--minutes N] [--seed S] [--agents A] [--details FILE]`
 *
 * A mesh of A agents (default 7) and a coordinator, each in a network
 * namespace, under a steady workload while a seeded nemesis applies faults
 * (test/chaos/schedule.ts); then a checker. Prints one JSON object as the
 * last line; exits 1 when a figure that must be zero is not (the seed to
 * replay is in the JSON and on stderr).
 */
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { stopAll } from '../helpers/processes.ts'
import { runChaos } from './chaos.ts'
import { chaosUnavailable } from './lab.ts'

const { values } = parseArgs({ options: { minutes: { type: 'string' }, seed: { type: 'string' }, agents: { type: 'string' }, details: { type: 'string' } } })
const minutes = Number(values.minutes ?? 1)
const seed = values.seed != null ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31)
const agents = Number(values.agents ?? 7)
if (!(minutes > 0) || !Number.isInteger(seed) || !Number.isInteger(agents) || agents < 5) {
  console.error('usage: npm run chaos -- [--minutes N > 0] [--seed INTEGER] [--agents A >= 5]')
  process.exit(2)
}
const why = await chaosUnavailable()
if (why != null) {
  console.error(`chaos: cannot run here: ${why}`)
  process.exit(2)
}
let result
try {
  // the whole record (every predict, delivery and fault) for looking into a failure
  const detailsFile = values.details ?? join(tmpdir(), `gatemesh-chaos-${seed}-${Date.now()}.json`)
  result = await runChaos({ seed, minutes, agents, detailsFile })
} catch (err: any) {
  console.error(`chaos: the run failed (seed ${seed}): ${String(err.stack ?? err)}`)
  await stopAll()
  process.exit(1)
}
const zeros = ['notificationsLost', 'duplicatesSeen', 'unsignedOrTamperedStoredOrRun', 'deploymentsWithMultiplePlacements', 'extraInstancesAfterHeal', 'agentsNotBackWithin30s'] as const
const bad = zeros.filter(k => result[k] !== 0)
if (result.convergeSecondsAfterLastHeal == null) bad.push('convergeSecondsAfterLastHeal' as never)
if (bad.length > 0) console.error(`chaos: FAILED (${bad.join(', ')}); replay with: ${result.replay}`)
console.log(JSON.stringify(result))
process.exit(bad.length > 0 ? 1 : 0)
