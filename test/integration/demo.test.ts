import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import t from 'tap'
import { CLI } from '../helpers/cluster.ts'

// `npm start` runs this: three agents on 127.0.0.1 and a member table.
t.test('the demo brings up three agents that see each other, then stops them', async t => {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'demo', '--duration', '14'], { timeout: 90_000 })
  const tables = stdout.split('\n\n').filter(block => block.includes('PEER') && block.includes('members'))
  t.ok(tables.length > 0, 'printed a member table')
  const last = tables.at(-1)!
  t.equal(last.split('\n').filter(l => /\balive\b/.test(l)).length, 3, `three members alive in the last table:\n${last}`)
  t.match(last, /server/)
  t.equal(last.split('\n').filter(l => /\bgateway\b/.test(l)).length, 2)
  t.match(stdout, /stopped/)
})
