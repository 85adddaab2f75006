export interface LoaderInit {
  nodeFlags: readonly string[]
  /** the agent's "restart me into the staged release" exit status */
  restartCode: number
  /** the loader's own exit status after switching back: systemd restarts it like a failure */
  rollbackCode: number
  /** the state directory's name inside the data directory */
  stateDir: string
  /** starts a pending release may take before it is given up. @default 3 */
  maxAttempts?: number
}

/**
 * `gatemesh-loader INSTALL_DIR DATA_DIR`: the agent unit's ExecStart, a
 * POSIX shell script that comes with the image and never with a release,
 * so a release that cannot start cannot break the way back either (the
 * Greengrass nucleus's `loader` works the same way).
 *
 * It shares three files with the agent in `DATA_DIR/<stateDir>`, each
 * `key=value` lines:
 *
 *  - `next`: written by the agent once a release is unpacked and verified
 *    in `releases/<version>`, before it exits with `restartCode`. The loader
 *    points `current` at it (and `previous` at the running one) and writes
 *  - `pending`: the release is on probation. The new release's agent
 *    removes it once its health check passes (joined the mesh, alive to
 *    its peers, its instances running again). Until then the loader stays
 *    the agent's parent and switches back to `previous` when the deadline
 *    passes, or when the release failed to start `maxAttempts` times (or
 *    exited with status 2, which restarting cannot fix), and writes
 *  - `rollback`: which release was given up and why; the previous
 *    release's agent reports it in the registry.
 *
 * Without a pending release the loader `exec`s the agent: no extra process.
 */
export function loaderScript (init: LoaderInit): string {
  const maxAttempts = init.maxAttempts ?? 3
  return `#!/bin/sh
# gatemesh-loader INSTALL_DIR DATA_DIR: starts the agent of the current release,
# switches to a release the agent staged, and switches back from one that does
# not prove itself healthy in time. Installed by \`gatemesh flash\` (see the
# agent unit); releases never replace it.
set -u
install=\${1:?usage: gatemesh-loader INSTALL_DIR DATA_DIR}
data=\${2:?usage: gatemesh-loader INSTALL_DIR DATA_DIR}
releases=$install/releases
state=$data/${init.stateDir}
max_attempts=${maxAttempts}

log () { echo "gatemesh-loader: $*" >&2; }
# the value of KEY in a state file of KEY=VALUE lines
field () { sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n 1; }
is_version () { case $1 in ''|[!0-9]*|*[!0-9A-Za-z.+-]*) return 1 ;; esac; return 0; }
is_number () { case $1 in ''|*[!0-9]*) return 1 ;; esac; return 0; }
is_id () { case $1 in ''|*[!0-9a-z._-]*) return 1 ;; esac; return 0; }
# one line of printable text, bounded: reasons end up in the registry
clean () { printf '%s' "$1" | tr -c '[:print:]' ' ' | cut -c1-400; }
now () { date +%s; }
current () { v=$(readlink "$releases/current" 2>/dev/null) || return 1; echo "\${v##*/}"; }
# a new link renamed over the old one: there is always a current
point () { ln -sfn "$2" "$releases/.$1.tmp" && mv -Tf "$releases/.$1.tmp" "$releases/$1"; }
# write a state file whole or not at all
put () { cat > "$state/.$1.tmp" && mv -f "$state/.$1.tmp" "$state/$1"; }
runnable () { is_version "$1" && [ -f "$releases/$1/release.json" ] && [ -x "$releases/$1/node/bin/node" ] && [ -f "$releases/$1/app/gatemesh.mjs" ]; }

# back to the previous release, saying why
rollback () {
  v=$(field "$state/pending" version); p=$(field "$state/pending" previous); r=$(field "$state/pending" rollout)
  note=$(field "$state/health" note)
  reason=$1; [ -n "$note" ] && reason="$reason (last health check: $note)"
  point current "$p" || { log "cannot point current back at $p"; return 1; }
  printf 'version=%s\\nprevious=%s\\nrollout=%s\\nat=%s\\nreason=%s\\n' "$v" "$p" "$r" "$(now)" "$(clean "$reason")" | put rollback
  rm -f "$state/pending" "$state/health"
  log "rolled back from $v to $p: $reason"
}

mkdir -p "$state" || exit 1

if ! runnable "$(current)"; then
  # a release deleted by hand, or a half-written one: the previous one still runs
  if runnable "$(readlink "$releases/previous" 2>/dev/null)"; then
    log "current release $(current) is not runnable; going back to $(readlink "$releases/previous")"
    point current "$(readlink "$releases/previous")" || exit 1
    rm -f "$state/pending"
  else
    log "no runnable release at $releases/current"
    exit 1
  fi
fi

# a release the agent staged becomes current, on probation
if [ -f "$state/next" ]; then
  next=$(field "$state/next" version); deadline=$(field "$state/next" deadline); rollout=$(field "$state/next" rollout)
  rm -f "$state/next"
  from=$(current)
  is_id "$rollout" || rollout=
  if runnable "$next" && is_number "$deadline" && [ "$next" != "$from" ]; then
    printf 'version=%s\\nprevious=%s\\nattempts=0\\nsince=%s\\ndeadline=%s\\nrollout=%s\\n' "$next" "$from" "$(now)" "$deadline" "$rollout" | put pending &&
      point previous "$from" && point current "$next" &&
      log "switched from $from to $next; it has \${deadline}s to prove itself healthy"
  else
    log "ignored staged release '$next': not installed, not runnable or already current"
  fi
fi

# a release on probation: count this start, or give it up
if [ -f "$state/pending" ]; then
  version=$(field "$state/pending" version); previous=$(field "$state/pending" previous)
  attempts=$(field "$state/pending" attempts); since=$(field "$state/pending" since); deadline=$(field "$state/pending" deadline)
  if ! is_number "$attempts" || ! is_number "$since" || ! is_number "$deadline" || [ "$version" != "$(current)" ] || ! runnable "$previous"; then
    # flashed over, edited, or its previous release is gone: nothing to go back to
    log "dropped a stale pending marker ($version)"
    rm -f "$state/pending"
  elif [ "$attempts" -ge "$max_attempts" ]; then
    rollback "it did not start: exited $attempts times before its health check passed (last status $(field "$state/pending" status))"
  elif [ "$(now)" -ge $((since + deadline)) ]; then
    rollback "not healthy within \${deadline}s"
  else
    sed "s/^attempts=.*/attempts=$((attempts + 1))/" "$state/pending" | put pending
  fi
fi

release=$(current)
dir=$releases/$release
export GATEMESH_LOADER=1 GATEMESH_INSTALL_DIR="$install" GATEMESH_RELEASE="$release"
if [ ! -f "$state/pending" ]; then
  exec "$dir/node/bin/node" ${init.nodeFlags.join(' ')} "$dir/app/gatemesh.mjs" agent --data "$data"
fi

# on probation: stay the agent's parent, to stop it at the deadline
"$dir/node/bin/node" ${init.nodeFlags.join(' ')} "$dir/app/gatemesh.mjs" agent --data "$data" &
child=$!
stopping=
trap 'stopping=1; kill -TERM "$child" 2>/dev/null' TERM INT
end=$((since + deadline))
while kill -0 "$child" 2>/dev/null && [ -f "$state/pending" ]; do
  if [ -z "$stopping" ] && [ "$(now)" -ge "$end" ]; then
    log "release $version did not pass its health check within \${deadline}s; stopping it"
    kill -TERM "$child" 2>/dev/null
    i=0
    while kill -0 "$child" 2>/dev/null && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
    kill -KILL "$child" 2>/dev/null
    rollback "not healthy within \${deadline}s"
    exit ${init.rollbackCode}
  fi
  sleep 1
done
wait "$child"; status=$?
# a signal interrupts wait: wait again for the agent's own status
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
if [ -f "$state/pending" ] && [ -z "$stopping" ]; then
  # ended before its health check passed
  sed "s/^status=.*//" "$state/pending" | sed '/^$/d' > "$state/.status.tmp" && printf 'status=%s\\n' "$status" >> "$state/.status.tmp" && mv -f "$state/.status.tmp" "$state/pending"
  if [ "$status" -eq 2 ]; then
    rollback "it exited with status 2 (bad configuration) before its health check passed"
    exit ${init.rollbackCode}
  fi
  [ "$status" -eq 0 ] && exit ${init.rollbackCode}
fi
exit "$status"
`
}
