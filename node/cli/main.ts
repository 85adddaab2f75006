import { VERSION } from '../version.ts'

interface Command { run: (argv: string[]) => Promise<void>, usage: string }

/**
 * Commands load their modules on demand: `gatemesh agent` on a gateway
 * should not pay in memory and start-up time for the bundle builder or the
 * coordinator.
 */
const COMMANDS: Record<string, { help: string, load: () => Promise<Command> }> = {
  fleet: { help: 'create a fleet: signing key pair and private-network key', load: async () => { const m = await import('./fleet.ts'); return { run: m.fleetCommand, usage: m.FLEET_USAGE } } },
  node: { help: 'create a ready-to-run node directory with a fleet certificate', load: async () => { const m = await import('./node-init.ts'); return { run: m.nodeCommand, usage: m.NODE_INIT_USAGE } } },
  agent: { help: 'run the agent of a node directory', load: async () => { const m = await import('./agent.ts'); return { run: m.agentCommand, usage: m.AGENT_USAGE } } },
  repair: { help: 'repair the LevelDB of a stopped agent or coordinator that exited saying its database is damaged', load: async () => { const m = await import('./repair.ts'); return { run: m.repairCommand, usage: m.REPAIR_USAGE } } },
  status: { help: 'show the mesh members as one agent sees them', load: async () => { const m = await import('./status.ts'); return { run: m.statusCommand, usage: m.STATUS_USAGE } } },
  bundle: { help: 'build, verify and inspect signed model bundles; publish and pull them through an agent', load: async () => { const m = await import('./bundle.ts'); return { run: m.bundleCommand, usage: m.BUNDLE_USAGE } } },
  run: { help: 'upload a signed bundle to an agent and start an instance of it there', load: async () => { const m = await import('./run.ts'); return { run: m.runCommand, usage: m.RUN_USAGE } } },
  stop: { help: 'stop an instance on an agent', load: async () => { const m = await import('./run.ts'); return { run: m.stopCommand, usage: m.STOP_USAGE } } },
  deploy: { help: 'sign a deployment spec and hand it to any agent', load: async () => { const m = await import('./deploy.ts'); return { run: m.deployCommand, usage: m.DEPLOY_USAGE } } },
  undeploy: { help: 'remove deployments (signed)', load: async () => { const m = await import('./deploy.ts'); return { run: m.undeployCommand, usage: m.UNDEPLOY_USAGE } } },
  deployments: { help: 'deployments with placement, window and instances, and the scheduler', load: async () => { const m = await import('./deploy.ts'); return { run: m.deploymentsCommand, usage: m.DEPLOYMENTS_USAGE } } },
  drain: { help: 'stop every instance on a node and take no new placements', load: async () => { const m = await import('./deploy.ts'); return { run: async argv => { await m.controlCommand('drain', argv) }, usage: m.CONTROL_USAGE } } },
  undrain: { help: 'let a drained node take placements again', load: async () => { const m = await import('./deploy.ts'); return { run: async argv => { await m.controlCommand('undrain', argv) }, usage: m.CONTROL_USAGE } } },
  evict: { help: 'stop one deployment\'s instance on a node; it is placed elsewhere', load: async () => { const m = await import('./deploy.ts'); return { run: async argv => { await m.controlCommand('evict', argv) }, usage: m.CONTROL_USAGE } } },
  unevict: { help: 'let a node run an evicted deployment again', load: async () => { const m = await import('./deploy.ts'); return { run: async argv => { await m.controlCommand('unevict', argv) }, usage: m.CONTROL_USAGE } } },
  revoke: { help: 'revoke nodes for good (fleet-signed): every agent cuts them off; --list shows revocations', load: async () => { const m = await import('./revoke.ts'); return { run: m.revokeCommand, usage: m.REVOKE_USAGE } } },
  enroll: { help: 'join a fleet through a coordinator with a one-time join token', load: async () => { const m = await import('./enroll.ts'); return { run: m.enrollCommand, usage: m.ENROLL_USAGE } } },
  coordinator: { help: 'run the coordinator: web API, dashboard, users, logs and enrollment, as a mesh peer', load: async () => { const [m, u] = await Promise.all([import('../../coordinator/cli/coordinator.ts'), import('../../coordinator/cli/usage.ts')]); return { run: m.coordinatorCommand, usage: u.COORDINATOR_USAGE } } },
  user: { help: 'add a coordinator user or reset a password (coordinator stopped)', load: async () => { const [m, u] = await Promise.all([import('../../coordinator/cli/user.ts'), import('../../coordinator/cli/usage.ts')]); return { run: m.userCommand, usage: u.USER_USAGE } } },
  demo: { help: 'start a throwaway mesh on 127.0.0.1', load: async () => { const m = await import('./demo.ts'); return { run: m.demoCommand, usage: m.DEMO_USAGE } } },
  release: { help: 'build an agent release (app, modules, runtime) as a fleet-signed bundle; publish it; list what an agent holds', load: async () => { const m = await import('./release.ts'); return { run: m.releaseCommand, usage: m.RELEASE_USAGE } } },
  rollout: { help: 'update the fleet\'s agents to a release in waves, with automatic rollback; status, pause, resume, abort', load: async () => { const m = await import('./rollout.ts'); return { run: m.rolloutCommand, usage: m.ROLLOUT_USAGE } } },
  image: { help: 'build a self-contained agent image (Node runtime, app, native modules, systemd unit, identity or join token) for x64 or arm64', load: async () => { const m = await import('./image.ts'); return { run: m.imageCommand, usage: m.IMAGE_USAGE } } },
  flash: { help: 'install an image into a mounted root filesystem, or onto a device over ssh', load: async () => { const m = await import('./flash.ts'); return { run: m.flashCommand, usage: m.FLASH_USAGE } } }
}

async function usage (): Promise<string> {
  const lines: string[] = []
  const seen = new Set<string>()
  for (const [, c] of Object.entries(COMMANDS)) {
    const { usage } = await c.load()
    lines.push(seen.has(usage) ? `      ${c.help}` : `  ${usage}\n      ${c.help}`)
    seen.add(usage)
  }
  return `gatemesh ${VERSION} — AI models on IoT gateways over a peer-to-peer mesh\n\nusage:\n${lines.join('\n')}\n`
}

/** Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration, 65 damaged data (EXIT_DAMAGED_DATA: run `gatemesh repair`). */
export async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name == null || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(await usage())
    return name == null ? 2 : 0
  }
  if (name === '--version' || name === 'version') {
    console.log(VERSION)
    return 0
  }
  const entry = COMMANDS[name]
  if (entry == null) {
    process.stderr.write(`gatemesh: unknown command "${name}"\n\n${await usage()}`)
    return 2
  }
  const command = await entry.load()
  try {
    await command.run(rest)
    return 0
  } catch (err: any) {
    const usageLike = ['ERR_USAGE', 'ERR_CONFIG', 'ERR_DEPLOYMENT_SPEC', 'ERR_ROLLOUT_SPEC', 'ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL'].includes(err?.code)
    process.stderr.write(`gatemesh ${name}: ${err?.message ?? String(err)}\n`)
    if (err?.code === 'ERR_USAGE') process.stderr.write(`usage: ${command.usage}\n`)
    // errors that restarting cannot fix carry their own status, which the systemd unit does not restart on
    if (typeof err?.exitCode === 'number') return err.exitCode
    return usageLike ? 2 : 1
  }
}
