import { AGENT_NODE_FLAGS } from '../app-bundle.ts'
import { loaderScript } from './loader.ts'

/**
 * Where an image puts things on the device. The archive mirrors the root
 * filesystem (`opt/gatemesh/...`, `var/lib/gatemesh/...`, `etc/systemd/system/...`),
 * so unpacking it at `/` is the whole installation.
 *
 *   /opt/gatemesh/
 *     bin/gatemesh              the CLI, on the current release's runtime
 *     bin/gatemesh-loader       the unit's ExecStart: switches releases, rolls back (loader.ts)
 *     lib/sysusers.d/…          the service user
 *     image.json                what the image was
 *     current -> releases/current
 *     releases/                 the service user's: agent releases side by side
 *       <version>/              app/, node_modules/, package.json, release.json, node -> runtimes/<node version>
 *       runtimes/<node version>/bin/node
 *       current -> <version>    the release the loader starts
 *       previous -> <version>   the one it goes back to
 *
 * Only `releases/` is written after flashing (by the agent, as its own
 * user); the loader, units and sysusers file stay root's.
 */
export const INSTALL_DIR = '/opt/gatemesh'
export const DATA_DIR = '/var/lib/gatemesh'
export const RELEASES_DIR = `${INSTALL_DIR}/releases`
/** Node runtimes by version, shared by the releases that run on them. */
export const RUNTIMES_DIR = `${RELEASES_DIR}/runtimes`
/** Names inside RELEASES_DIR that are not releases (release versions start with a digit). */
export const CURRENT = 'current'
export const PREVIOUS = 'previous'
export const RUNTIMES = 'runtimes'
/** `/opt/gatemesh/current`: a fixed link to `releases/current`, for people and paths. */
export const CURRENT_LINK = `${INSTALL_DIR}/current`
/** Each release's own description, written when it is installed. */
export const RELEASE_INFO = 'release.json'
/** Inside a release: the app's entry and the runtime link. */
export const RELEASE_APP = 'app/gatemesh.mjs'
export const RELEASE_NODE = 'node/bin/node'
/** Units of locally installed software belong in /etc; /lib may be a symlink (merged /usr), which tar must not write through. */
export const UNIT_DIR = '/etc/systemd/system'
export const AGENT_UNIT = 'gatemesh-agent.service'
export const SETUP_UNIT = 'gatemesh-setup.service'
export const WANTS_DIR = `${UNIT_DIR}/multi-user.target.wants`
export const SERVICE_USER = 'gatemesh'
export const SYSUSERS_FILE = `${INSTALL_DIR}/lib/sysusers.d/gatemesh.conf`
export const CLI_WRAPPER = `${INSTALL_DIR}/bin/gatemesh`
export const LOADER = `${INSTALL_DIR}/bin/gatemesh-loader`
/** The image's own description of itself. */
export const IMAGE_MANIFEST = `${INSTALL_DIR}/image.json`
/** Where `flash` links the CLI so operators find it on PATH. */
export const CLI_LINK = '/usr/local/bin/gatemesh'

/**
 * The agent's exit status for "restart me into the release I staged": the
 * unit restarts it (RestartForceExitStatus) without counting a failure
 * (SuccessExitStatus), and the loader switches releases on the way.
 */
export const RESTART_EXIT_CODE = 100
/** The loader's exit status after it gave up on a release and switched back: restarted like any failure. */
export const ROLLBACK_EXIT_CODE = 75

/** The release state the loader and the agent share, under the data directory. */
export const RELEASE_STATE_DIR = 'release'

/** Archive paths (relative, as in the tarball) of the directories an image may write to. */
export const IMAGE_ROOTS = ['opt/gatemesh/', 'var/lib/gatemesh/', `etc/systemd/system/${AGENT_UNIT}`, `etc/systemd/system/${SETUP_UNIT}`]

/**
 * Environment of the agent. One malloc arena: glibc otherwise keeps an
 * arena per thread (libuv's pool, V8's helpers), which is RSS a gateway
 * does not have to spare. Fixed mmap and trim thresholds (64 KiB): glibc
 * otherwise raises its mmap threshold after large frees, so later large
 * buffers come from the heap and leave it fragmented; at 5000 members an
 * idle agent held 332–352 MB with the defaults, 293 MB with these.
 * DEBUG_COLORS=no: the unit's stderr is the journal, never a terminal, so
 * this changes no output, but libp2p's logger (weald, a fork of debug)
 * otherwise asks isatty(2) for every logger it makes, and libp2p makes
 * loggers for every stream it opens.
 */
export const AGENT_ENVIRONMENT: Record<string, string> = { MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '65536', DEBUG_COLORS: 'no', NODE_ENV: 'production' }

/** The agent's exit status for a damaged database (EXIT_DAMAGED_DATA in node/store/errors.ts; packaging does not import node). */
export const DAMAGED_DATA_EXIT = 65

/** The agent's command line, as the unit runs it: the loader, which starts the current release's agent. */
export function agentCommandLine (): string[] {
  return [LOADER, INSTALL_DIR, DATA_DIR]
}

export function agentUnit (description: { version: string, arch: string }): string {
  const env = Object.entries(AGENT_ENVIRONMENT).map(([k, v]) => `Environment=${k}=${v}`).join('\n')
  return `# gatemesh agent (image ${description.version}, ${description.arch}), installed by \`gatemesh flash\`
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
# releases are installed by the agent, as ${SERVICE_USER}: ${RELEASES_DIR} is its (links not followed)
ExecStartPre=+/bin/chown -R -h ${SERVICE_USER}:${SERVICE_USER} ${RELEASES_DIR}
# the loader starts the current release, switches to one the agent staged, and switches back from one that does not prove itself healthy
ExecStart=${agentCommandLine().join(' ')}
Restart=on-failure
RestartSec=5s
# ${RESTART_EXIT_CODE}: the agent staged a release and asks to be started again, into it
SuccessExitStatus=${RESTART_EXIT_CODE}
RestartForceExitStatus=${RESTART_EXIT_CODE}
# exit status 2 is bad configuration or a refused join token, ${DAMAGED_DATA_EXIT} a damaged database
# (the journal says to run \`gatemesh repair\`): restarting cannot fix either
RestartPreventExitStatus=2 ${DAMAGED_DATA_EXIT}
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

/** `gatemesh` on the device, on the current release's own runtime wherever the image was unpacked. */
export function cliWrapper (): string {
  return `#!/bin/sh
# the gatemesh CLI of the current release, on its own Node runtime
here=$(dirname "$(readlink -f "$0")")/../releases/${CURRENT}
exec "$here/${RELEASE_NODE}" ${AGENT_NODE_FLAGS.join(' ')} "$here/${RELEASE_APP}" "$@"
`
}

/** The loader, with the agent's node flags. */
export function loader (): string {
  return loaderScript({ nodeFlags: AGENT_NODE_FLAGS, restartCode: RESTART_EXIT_CODE, rollbackCode: ROLLBACK_EXIT_CODE, stateDir: RELEASE_STATE_DIR })
}

/** Release versions: semantic versions, which start with a digit and so never collide with `current`, `previous` or `runtimes`. */
export const RELEASE_VERSION_PATTERN = '^(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})(-[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*)?(\\+[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*)?$'
/** Node versions, as npm's node-linux-<arch> packages name them. */
export const NODE_VERSION_PATTERN = '^[0-9]{1,4}\\.[0-9]{1,4}\\.[0-9]{1,4}$'

/** Where one release lives on the device. */
export function releaseDir (version: string): string {
  return `${RELEASES_DIR}/${version}`
}
