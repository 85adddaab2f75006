#!/usr/bin/env bash
# Run one test file N times, alone, and say how often it failed.
#
#   test/loop.sh FILE [N]        (or: npm run loop -- FILE [N]); N defaults to 20
#
# Each run gets its own GATEMESH_TEST_RUN id; after each run any process of
# that run still alive is listed, counted as a failure and killed. Logs of
# every run (raw TAP) go to $LOOP_LOGS, default a fresh /tmp/gatemesh-loop-*;
# so do the run's temporary directories (TMPDIR), agents' logs included,
# kept when the run failed and removed when it passed.
# Heavy: run it under `flock /tmp/gatemesh-heavy.lock` on a shared machine.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
file=${1:?usage: test/loop.sh FILE [N]}
n=${2:-20}
logs=${LOOP_LOGS:-$(mktemp -d /tmp/gatemesh-loop-XXXXXX)}
mkdir -p "$logs"
tap build >/dev/null
node test/setup.ts

passed=0 failed=0
for i in $(seq 1 "$n"); do
  run="loop-$$-$i-$(date +%s)"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$SECONDS
  tmp="$logs/tmp-$i"
  mkdir -p "$tmp"
  GATEMESH_TEST_RUN=$run GATEMESH_KEEP_TEST_DIRS=1 TMPDIR=$tmp tap --reporter=tap "$file" >"$logs/run-$i.log" 2>&1
  status=$?
  secs=$((SECONDS - start))
  verdict=pass
  ((status == 0)) || verdict=FAIL
  if left=$(bash test/leftovers.sh "$run" --wait 20 --kill); then left=''; else
    verdict=FAIL
    printf 'left running after the run:\n%s\n' "$left" >>"$logs/run-$i.log"
  fi
  if [[ $verdict == pass ]]; then passed=$((passed + 1)); rm -rf "$tmp"; else failed=$((failed + 1)); fi
  why=''
  [[ $verdict == FAIL ]] && why=$(grep -m3 -E '^\s*not ok|timed out after|^left running' "$logs/run-$i.log" | tr -s ' ' | cut -c1-200 | paste -sd'|')
  echo "run $i/$n: $verdict ${secs}s (load before: $load)${left:+ leftovers: $(wc -l <<<"$left")}${why:+ -- $why}"
done
echo "$file: $passed/$n passed, $failed failed (logs in $logs)"
((failed == 0))
