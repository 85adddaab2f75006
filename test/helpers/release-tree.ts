import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/**
 * A small release tree as `stageRelease` lays one out (app/, node_modules/
 * with a scoped package and an executable, package.json), for tests that
 * need releases without the minutes a real build takes. `app` is the entry's
 * source: tests run it as the agent.
 */
export async function fakeReleaseTree (dir: string, options: { version: string, app?: string }): Promise<void> {
  await mkdir(join(dir, 'app', 'chunks'), { recursive: true })
  await writeFile(join(dir, 'app', 'gatemesh.mjs'), options.app ?? `console.log('gatemesh ${options.version}')\n`)
  await writeFile(join(dir, 'app', 'chunks', 'agent-x1.mjs'), 'export const x = 1\n')
  await mkdir(join(dir, 'node_modules', '@scope', 'pkg'), { recursive: true })
  await writeFile(join(dir, 'node_modules', '@scope', 'pkg', 'index.js'), 'module.exports = 1\n')
  await writeFile(join(dir, 'node_modules', '@scope', 'pkg', 'prebuilt@linux+x64.node'), Buffer.alloc(4096, 7))
  await mkdir(join(dir, 'node_modules', 'tool', 'bin'), { recursive: true })
  await writeFile(join(dir, 'node_modules', 'tool', 'bin', 'run'), '#!/bin/sh\necho run\n')
  await chmod(join(dir, 'node_modules', 'tool', 'bin', 'run'), 0o755)
  await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'gatemesh', version: options.version, private: true, type: 'module' }) + '\n')
}

/**
 * A "Node runtime" directory: `bin/node` links to the Node running the
 * test (or is a copy-free stand-in script when `script` is given).
 */
export async function fakeRuntime (dir: string, options: { script?: string } = {}): Promise<void> {
  await mkdir(join(dir, 'bin'), { recursive: true })
  if (options.script != null) {
    await writeFile(join(dir, 'bin', 'node'), options.script)
    await chmod(join(dir, 'bin', 'node'), 0o755)
  } else {
    await symlink(process.execPath, join(dir, 'bin', 'node'))
  }
  await writeFile(join(dir, 'LICENSE'), 'MIT\n')
}
