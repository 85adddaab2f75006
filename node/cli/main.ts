import { agentCommand, AGENT_USAGE } from './agent.ts'
import { bundleCommand, BUNDLE_USAGE } from './bundle.ts'
import { COORDINATOR_USAGE, USER_USAGE } from '../../coordinator/cli/usage.ts'
import { demoCommand, DEMO_USAGE } from './demo.ts'
import { enrollCommand, ENROLL_USAGE } from './enroll.ts'
import { flashCommand, FLASH_USAGE } from './flash.ts'
import { fleetCommand, FLEET_USAGE } from './fleet.ts'
import { imageCommand, IMAGE_USAGE } from './image.ts'
import { nodeCommand, NODE_INIT_USAGE } from './node-init.ts'
import { statusCommand, STATUS_USAGE } from './status.ts'
import { VERSION } from '../version.ts'

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>, usage: string, help: string }> = {
  fleet: { run: fleetCommand, usage: FLEET_USAGE, help: 'create a fleet: signing key pair and private-network key' },
  node: { run: nodeCommand, usage: NODE_INIT_USAGE, help: 'create a ready-to-run node directory with a fleet certificate' },
  agent: { run: agentCommand, usage: AGENT_USAGE, help: 'run the agent of a node directory' },
  status: { run: statusCommand, usage: STATUS_USAGE, help: 'show the mesh members as one agent sees them' },
  demo: { run: demoCommand, usage: DEMO_USAGE, help: 'start a throwaway three-node mesh on 127.0.0.1' },
  bundle: { run: bundleCommand, usage: BUNDLE_USAGE, help: 'build, verify and inspect signed model bundles; publish and pull them through an agent' },
  enroll: { run: enrollCommand, usage: ENROLL_USAGE, help: 'join a fleet through a coordinator with a one-time join token' },
  // the coordinator's commands load Fastify, Swagger and the dashboard only when they run
  coordinator: { run: async argv => { await (await import('../../coordinator/cli/coordinator.ts')).coordinatorCommand(argv) }, usage: COORDINATOR_USAGE, help: 'run the coordinator: web API, dashboard, users, logs and enrollment, as a mesh peer' },
  user: { run: async argv => { await (await import('../../coordinator/cli/user.ts')).userCommand(argv) }, usage: USER_USAGE, help: 'add a coordinator user or reset a password (coordinator stopped)' },
  image: { run: imageCommand, usage: IMAGE_USAGE, help: 'build a self-contained agent image (Node runtime, app, native modules, systemd unit, identity or join token) for x64 or arm64' },
  flash: { run: flashCommand, usage: FLASH_USAGE, help: 'install an image into a mounted root filesystem, or onto a device over ssh' }
}

function usage (): string {
  const lines = Object.entries(COMMANDS).map(([, c]) => `  ${c.usage}\n      ${c.help}`)
  return `gatemesh ${VERSION} — AI models on IoT gateways over a peer-to-peer mesh\n\nusage:\n${lines.join('\n')}\n`
}

/** Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration. */
export async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name == null || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage())
    return name == null ? 2 : 0
  }
  if (name === '--version' || name === 'version') {
    console.log(VERSION)
    return 0
  }
  const command = COMMANDS[name]
  if (command == null) {
    process.stderr.write(`gatemesh: unknown command "${name}"\n\n${usage()}`)
    return 2
  }
  try {
    await command.run(rest)
    return 0
  } catch (err: any) {
    const usageLike = ['ERR_USAGE', 'ERR_CONFIG', 'ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL'].includes(err?.code)
    process.stderr.write(`gatemesh ${name}: ${err?.message ?? String(err)}\n`)
    if (err?.code === 'ERR_USAGE') process.stderr.write(`usage: ${command.usage}\n`)
    return usageLike ? 2 : 1
  }
}
