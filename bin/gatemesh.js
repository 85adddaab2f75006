#!/usr/bin/env node
// gatemesh is TypeScript run by Node's type stripping, which needs Node 22.18+.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`gatemesh needs Node.js 22.18 or newer; this is ${process.version}.\n` +
    'Run it through npm (npm start, npx gatemesh), which uses the node@22 pinned in devDependencies.')
  process.exit(1)
}
const { main } = await import('../node/cli/main.ts')
const code = await main(process.argv.slice(2))
if (code !== 0) process.exitCode = code
