import { AGENT_NODE_FLAGS } from '../app-bundle.ts'

/**
 * Where an image puts things on the device. The archive mirrors the root
 * filesystem (`opt/gatemesh/...`, `var/lib/gatemesh/...`, `etc/systemd/system/...`),
 * so unpacking it at `/` is the whole installation.
 */
export const INSTALL_DIR = '/opt/gatemesh'
export const DATA_DIR = '/var/lib/gatemesh'
/** Units of locally installed software belong in /etc; /lib may be a symlink (merged /usr), which tar must not write through. */
export const UNIT_DIR = '/etc/systemd/system'
export const AGENT_UNIT = 'gatemesh-agent.service'
export const SETUP_UNIT = 'gatemesh-setup.service'
export const WANTS_DIR = `${UNIT_DIR}/multi-user.target.wants`
export const SERVICE_USER = 'gatemesh'
export const SYSUSERS_FILE = `${INSTALL_DIR}/lib/sysusers.d/gatemesh.conf`
export const NODE_BINARY = `${INSTALL_DIR}/node/bin/node`
export const APP_ENTRY = `${INSTALL_DIR}/app/gatemesh.mjs`
export const CLI_WRAPPER = `${INSTALL_DIR}/bin/gatemesh`
/** The image's own description of itself. */
export const IMAGE_MANIFEST = `${INSTALL_DIR}/image.json`
/** Where `flash` links the CLI so operators find it on PATH. */
export const CLI_LINK = '/usr/local/bin/gatemesh'

/** Archive paths (relative, as in the tarball) of the directories an image may write to. */
export const IMAGE_ROOTS = ['opt/gatemesh/', 'var/lib/gatemesh/', `etc/systemd/system/${AGENT_UNIT}`, `etc/systemd/system/${SETUP_UNIT}`]

/**
 * Environment of the agent. One malloc arena: glibc otherwise keeps an
 * arena per thread (libuv's pool, V8's helpers), which is RSS a gateway
 * does not have to spare.
 */
export const AGENT_ENVIRONMENT: Record<string, string> = { MALLOC_ARENA_MAX: '1', NODE_ENV: 'production' }

/** The agent's command line, as the unit runs it. */
export function agentCommandLine (): string[] {
  return [NODE_BINARY, ...AGENT_NODE_FLAGS, APP_ENTRY, 'agent', '--data', DATA_DIR]
}

export function agentUnit (description: { version: string, arch: string }): string {
  const env = Object.entries(AGENT_ENVIRONMENT).map(([k, v]) => `Environment=${k}=${v}`).join('\n')
  return `# gatemesh agent ${description.version} (${description.arch}), installed by \`gatemesh flash\`
[Unit]
Description=gatemesh agent: this device's share of the fleet's models, sensors and actions
Wants=network-online.target
# time-sync.target only waits when systemd-time-wait-sync is enabled (gateways without a real-time clock)
After=network-online.target time-sync.target ${SETUP_UNIT}
Requires=${SETUP_UNIT}

[Service]
Type=simple
User=${SERVICE_USER}
Group=${SERVICE_USER}
# systemd creates ${DATA_DIR} and hands it (with the identity or join token the image put there) to ${SERVICE_USER}
StateDirectory=gatemesh
StateDirectoryMode=0700
WorkingDirectory=${DATA_DIR}
${env}
ExecStart=${agentCommandLine().join(' ')}
Restart=on-failure
RestartSec=5s
# exit status 2 is bad configuration or a refused join token: restarting cannot fix it
RestartPreventExitStatus=2
TimeoutStopSec=20s
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`
}

/**
 * Runs before the agent on every boot; on the first it creates the
 * agent's system user. A unit of its own because systemd resolves User=
 * before any of the agent unit's commands run, even privileged ones.
 */
export function setupUnit (): string {
  return `# gatemesh first-boot setup, installed by \`gatemesh flash\`
[Unit]
Description=gatemesh setup: the agent's system user and its device groups
Before=${AGENT_UNIT}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=systemd-sysusers ${SYSUSERS_FILE}
`
}

export function sysusersConf (): string {
  return `# the gatemesh agent's own user; its data lives in ${DATA_DIR}
u ${SERVICE_USER} - "gatemesh agent" ${DATA_DIR} /usr/sbin/nologin
# serial sensors (/dev/ttyUSB*, /dev/ttyAMA*) belong to dialout, GPIO lines (Raspberry Pi OS) to gpio
m ${SERVICE_USER} dialout
m ${SERVICE_USER} gpio
`
}

/** `gatemesh` on the device, on the image's own runtime wherever the image was unpacked. */
export function cliWrapper (): string {
  return `#!/bin/sh
# the gatemesh CLI on the image's own Node runtime
here=$(dirname "$(readlink -f "$0")")/..
exec "$here/node/bin/node" ${AGENT_NODE_FLAGS.join(' ')} "$here/app/gatemesh.mjs" "$@"
`
}
