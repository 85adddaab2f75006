#!/usr/bin/env bash
# List the processes of one test run: those whose environment carries
# GATEMESH_TEST_RUN=<id> (test/helpers/processes.ts sets it on everything a
# test starts; .ci/run and test/loop.sh set it for the whole run). Other
# engineers' processes on the machine carry other ids or none, so they never
# count. Prints "pid command line" per process; exit 1 if any is left.
#
#   test/leftovers.sh ID [--wait SECONDS] [--kill]
# --wait gives reapers and exiting children that long to go first;
# --kill ends what is still there (by pid, after listing it).
set -uo pipefail
id=${1:?usage: leftovers.sh ID [--wait SECONDS] [--kill]}
shift
wait=0 kill=0
while (($#)); do
  case $1 in
    --wait) wait=$2; shift 2 ;;
    --kill) kill=1; shift ;;
    *) echo "leftovers.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

list () {
  local e pid
  for e in /proc/[0-9]*/environ; do
    pid=${e#/proc/}; pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    grep -qszxF "GATEMESH_TEST_RUN=$id" "$e" || continue
    # a zombie or a process gone meanwhile has no command line: not running
    local cmd
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
    [[ -n $cmd ]] && echo "$pid ${cmd:0:300}"
  done
}

deadline=$((SECONDS + wait))
left=$(list)
while [[ -n $left ]] && ((SECONDS < deadline)); do
  sleep 1
  left=$(list)
done
[[ -z $left ]] && exit 0
echo "$left"
if ((kill)); then
  while read -r pid _; do kill -KILL "$pid" 2>/dev/null; done <<<"$left"
fi
exit 1
