/**
 * What `.ci/run` prints after the tests, from tap's raw output
 * (`tap --reporter=tap`): the failures with their diagnostics, how long
 * each test file took, and the slowest ten.
 *
 *   node test/report.ts TAP_LOG
 */
import { readFileSync } from 'node:fs'

const file = process.argv[2]
if (file == null) {
  console.error('usage: node test/report.ts TAP_LOG')
  process.exit(2)
}
const lines = readFileSync(file, 'utf8').split('\n')

interface FileResult { name: string, ok: boolean, seconds: number | undefined, skip: boolean }
// a test file's result is a top-level test point: "ok 3 - test/x.test.ts # time=1234.5ms"
const TOP = /^(not )?ok \d+ - (\S+)(.*)$/
const files: FileResult[] = []
for (const line of lines) {
  const m = TOP.exec(line)
  if (m == null) continue
  const time = / # time=([\d.]+)ms/.exec(m[3]!)?.[1]
  files.push({ name: m[2]!, ok: m[1] == null, seconds: time == null ? undefined : Number(time) / 1000, skip: /# SKIP/.test(m[3]!) })
}

// each failed assertion: its "not ok" line at any depth, with the YAML block under it
const failures: string[] = []
for (let i = 0; i < lines.length; i++) {
  const m = /^(\s*)not ok \d+ - (.*)$/.exec(lines[i]!)
  if (m == null || TOP.test(lines[i]!)) continue
  const indent = m[1]!
  const block = [lines[i]!.trim()]
  if (lines[i + 1] === `${indent}  ---`) {
    for (let j = i + 2; j < lines.length && lines[j] !== `${indent}  ...`; j++) block.push('    ' + lines[j]!.slice(indent.length + 2))
  }
  failures.push(block.slice(0, 40).join('\n'))
}

const fmt = (s: number | undefined): string => s == null ? '     ?' : s.toFixed(1).padStart(6)
if (failures.length > 0) {
  console.log(`\nfailed assertions (${failures.length}):`)
  for (const f of failures.slice(0, 50)) console.log(`\n${f}`)
  if (failures.length > 50) console.log(`\n... and ${failures.length - 50} more in the log`)
}
console.log(`\ntest files (${files.length}), seconds each:`)
for (const f of [...files].sort((a, b) => a.name.localeCompare(b.name))) console.log(`${fmt(f.seconds)}  ${f.ok ? (f.skip ? 'skip' : 'ok  ') : 'FAIL'}  ${f.name}`)
console.log('\nslowest ten:')
for (const [i, f] of [...files].filter(f => f.seconds != null).sort((a, b) => b.seconds! - a.seconds!).slice(0, 10).entries()) {
  console.log(`${String(i + 1).padStart(2)}. ${fmt(f.seconds)} s  ${f.name}`)
}
const failed = files.filter(f => !f.ok)
if (failed.length > 0) console.log(`\nfailed files: ${failed.map(f => f.name).join(', ')}`)
