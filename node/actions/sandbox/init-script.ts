/**
 * The first process inside a script's namespaces (PID 1 there, with
 * privileges over those namespaces only). It builds the script's view of
 * the filesystem, runs the script with the limits and identity it is given,
 * and saves the scratch directory afterwards. Plain POSIX sh with
 * util-linux, coreutils and iproute2, which every Debian has; a shell script
 * rather than a Node one because it must stay alive as the namespace's
 * init and cannot exec into the script before the copy-out.
 *
 * Inputs (environment, never seen by the script, which starts with `env -i`):
 *   GM_RUN      the run's directory: net/ (agent sockets), hosts, resolv, root/
 *   GM_SCRATCH  the instance's persistent scratch directory
 *   GM_BUNDLE   the bundle directory (read-only for the script)
 *   GM_QUOTA    scratch size in bytes
 *   GM_OWNER    uid:gid to own the scratch tmpfs (another user), or empty
 *   GM_NET      1 when in a network namespace of our own
 *   GM_ADDRS    addresses to add to the namespace's loopback (declared IPs)
 *   GM_HIDE     directories to cover with an empty tmpfs (the agent's data directory)
 *   GM_TIMEOUT  seconds the script may run
 *   GM_INSIDE   where the script's world is mounted (a directory shadowed in its namespace only)
 * Then "$@": the script's command line (identity, limits, node).
 *
 * The script sees $GM_INSIDE/bundle (read-only), $GM_INSIDE/scratch (a
 * tmpfs of GM_QUOTA bytes seeded from the persistent scratch) and
 * $GM_INSIDE/net. Setup
 * failures exit 125 with a line starting "gatemesh-sandbox:".
 */
export const INIT_SCRIPT = `
set -u
fail () { printf 'gatemesh-sandbox: %s\\n' "$*" >&2; exit 125; }
cd "$GM_RUN" || fail "no run directory $GM_RUN"
mkdir -p root persist || fail "cannot prepare $GM_RUN"
mount -t tmpfs -o size=1m,mode=0755 gm-root root || fail "cannot mount a tmpfs"
mkdir root/scratch root/bundle root/net || fail "cannot prepare the sandbox root"
owner=""
[ -n "$GM_OWNER" ] && owner=",uid=\${GM_OWNER%%:*},gid=\${GM_OWNER##*:}"
mount -t tmpfs -o "size=$GM_QUOTA,mode=0700$owner" gm-scratch root/scratch || fail "cannot mount the scratch tmpfs"
cp -a --no-preserve=ownership "$GM_SCRATCH/." root/scratch/ || fail "cannot copy the scratch directory in (does it fit its quota of $GM_QUOTA bytes?)"
# the script owns what it may change; -h: a link is changed itself, never what it points to
[ -z "$GM_OWNER" ] || chown -R -h "$GM_OWNER" root/scratch || fail "cannot hand the scratch directory to $GM_OWNER"
chmod 0700 root/scratch || fail "cannot set the scratch directory's mode"
mount --bind "$GM_BUNDLE" root/bundle && mount -o remount,bind,ro root/bundle || fail "cannot mount the bundle"
mount --bind net root/net || fail "cannot mount the sockets"
mount --bind "$GM_SCRATCH" persist || fail "cannot mount the persistent scratch"
if [ "$GM_NET" = 1 ]; then
  ip link set lo up || fail "cannot bring up loopback"
  for a in $GM_ADDRS; do
    case "$a" in *:*) ip -6 addr add "$a/128" dev lo ;; *) ip addr add "$a/32" dev lo ;; esac || fail "cannot add $a"
  done
fi
if [ "$GM_NET" = 1 ]; then
  # declared names resolve to their relays; nothing else resolves
  mount --bind hosts /etc/hosts || fail "cannot mount /etc/hosts"
  [ ! -e /etc/resolv.conf ] || mount --bind resolv /etc/resolv.conf || fail "cannot mount /etc/resolv.conf"
fi
# relative paths from here keep reaching the run directory once it is covered
for d in $GM_HIDE; do mount -t tmpfs -o size=4k,mode=0000 gm-hidden "$d" || fail "cannot hide $d"; done
mount --rbind root "$GM_INSIDE" || fail "cannot mount over $GM_INSIDE"
timeout --kill-after=1 "$GM_TIMEOUT" "$@"
code=$?
# the persistent scratch becomes what the script left, which fits its quota
find persist -mindepth 1 -maxdepth 1 -exec rm -rf {} + && cp -a --no-preserve=ownership root/scratch/. persist/ || printf 'gatemesh-sandbox: could not save the scratch directory\\n' >&2
exit $code
`
