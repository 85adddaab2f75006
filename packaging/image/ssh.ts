import { spawn } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { ImageError } from './errors.ts'
import { AGENT_UNIT, CLI_WRAPPER, INSTALL_DIR } from './layout.ts'
import { UNAME_MACHINE } from './arch.ts'
import { inspectImage } from './flash.ts'
import type { ImageManifest } from './manifest.ts'

/** Quote for a POSIX shell. */
function sh (s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`
}

/**
 * The script the device runs (as root, through sudo when the ssh user is
 * not root) once the archive is on it: check the CPU, unpack the image's own
 * CLI to a temporary place, let it `flash --root /` (the same checks and
 * steps as a local flash), then reload systemd and (re)start the agent.
 */
export function remoteInstallScript (remoteFile: string, manifest: ImageManifest): string {
  const machine = UNAME_MACHINE[manifest.arch]
  const opt = INSTALL_DIR.slice(1)
  return `set -eu
f=${sh(remoteFile)}
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
t=$(mktemp -d)
trap 'rm -rf "$t"; $SUDO rm -f "$f"' EXIT
if [ "$(uname -m)" != ${sh(machine)} ]; then echo "this host is $(uname -m); the image is for ${manifest.arch} (${machine})" >&2; exit 3; fi
tar -xzf "$f" -C "$t" ${sh(opt)}
$SUDO "$t${CLI_WRAPPER}" flash "$f" --root /
if [ -d /run/systemd/system ]; then
  $SUDO systemctl daemon-reload
  $SUDO systemctl restart ${AGENT_UNIT}
  echo "${AGENT_UNIT} (re)started; follow it with: journalctl -fu ${AGENT_UNIT}"
else
  echo "systemd is not running here; ${AGENT_UNIT} starts on the next boot"
fi
`
}

function run (command: string, args: string[], stdin: NodeJS.ReadableStream | string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.on('error', err => { reject(new ImageError(`cannot run ${command}: ${err.message}`, { cause: err })) })
    child.on('close', code => {
      if (code === 0) resolve(out)
      else reject(new ImageError(`${command} ${args.join(' ')} exited with ${code ?? 'a signal'}`))
    })
    if (typeof stdin === 'string') child.stdin.end(stdin)
    else stdin.pipe(child.stdin)
  })
}

export interface SshFlashInit {
  archive: string
  /** user@host */
  target: string
  /** extra ssh arguments, e.g. `-p 2222` or `-i KEY` */
  sshArgs?: string[]
  log?: (line: string) => void
}

/**
 * `flash --ssh`: copy the archive to the device over ssh (into a private
 * temporary file) and run the install script there. Needs ssh access with
 * passwordless sudo (Raspberry Pi OS's first user has it) or root.
 */
export async function flashSsh (init: SshFlashInit): Promise<ImageManifest> {
  const log = init.log ?? (() => {})
  const { manifest } = await inspectImage(init.archive)
  const ssh = init.sshArgs ?? []
  log(`copying ${manifest.name} ${manifest.version} (${manifest.arch}) to ${init.target}`)
  const remote = (await run('ssh', [...ssh, init.target, 'umask 077; f=$(mktemp /tmp/gatemesh-image.XXXXXX) && cat > "$f" && echo "$f"'], createReadStream(init.archive))).trim()
  if (!remote.startsWith('/tmp/gatemesh-image.')) throw new ImageError(`unexpected answer from ${init.target} while copying: ${JSON.stringify(remote.slice(0, 200))}`)
  log(`installing on ${init.target}`)
  const out = await run('ssh', [...ssh, init.target, 'sh -s'], remoteInstallScript(remote, manifest))
  for (const line of out.trim().split('\n')) if (line !== '') log(line)
  return manifest
}
