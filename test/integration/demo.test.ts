import t from 'tap'
import { CLI } from '../helpers/cluster.ts'
import { budget, calibrate } from '../helpers/budget.ts'
import { run } from '../helpers/processes.ts'

// `npm start` runs this: a coordinator, a server and two gateways on
// 127.0.0.1, the anomaly model uploaded and deployed through the API, and
// notifications from the gateways' rule.
t.test('the demo runs the whole system and shows notifications as they fire', async t => {
  // from sources, as `npm start` runs it; its agents and coordinator are in its process group and die with it.
  // Its instances must start and see a spike within the duration: longer on a busy machine
  const slowness = await calibrate()
  t.comment(`machine slowness ${slowness.toFixed(2)}: demo runs ${Math.round(35 * slowness)} s`)
  const { stdout } = await run(process.execPath, [CLI, 'demo', '--duration', String(Math.round(35 * slowness))], { timeoutMs: budget(240_000) })
  t.match(stdout, /dashboard\s+http:\/\/127\.0\.0\.1:\d+\s+\(user admin, password \S+\)/, 'prints the dashboard URL and the admin credentials')
  t.match(stdout, /uploaded anomaly@1\.0\.0 through the API: fleet-signed bundle [0-9a-f]{16}/)
  t.match(stdout, /deployed "cold-room"/)
  const tables = stdout.split('\n\n').filter(block => block.includes('PEER') && block.includes('members'))
  t.ok(tables.length > 0, 'printed a member table')
  const last = tables.at(-1)!
  t.equal(last.split('\n').filter(l => /\balive\b/.test(l)).length, 4, `four members alive:\n${last}`)
  t.match(last, /coordinator/)
  t.match(stdout, /cold-room: 2 of 2 replicas running/, 'the deployment runs on both gateways')
  const notes = stdout.split('\n').filter(l => l.startsWith('🔔'))
  t.ok(notes.length >= 1, `notifications fired (${notes.length})`)
  t.match(notes[0], /gateway-\d\s+temp1: anomaly \(score (0\.9\d|1\.00), peak \d+\.\d °C\)/)
  t.match(stdout, /stopped/)
})
