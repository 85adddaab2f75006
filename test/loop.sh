#!/usr/bin/env bash
# Run test files N times each, alone, and say how often each failed.
#
#   test/loop.sh FILE... [N]       (or: npm run loop -- FILE... [N]); N defaults to 20
#
# With several files it runs rounds (each file once per round, one at a
# time), so every file gets its share of a busy machine's good and bad
# moments. Each run gets its own GATEMESH_TEST_RUN id; after each run any
# process of that run still alive is listed, counted as a failure and
# killed. Logs of every run (raw TAP) go to $LOOP_LOGS (default a fresh
# /tmp/gatemesh-loop-*), under one directory per file; so do the run's
# temporary directories (TMPDIR), agents' logs included, kept when the run
# failed and removed when it passed.
# Heavy: run it under `flock /tmp/gatemesh-heavy.lock` on a shared machine.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
(($#)) || { echo 'usage: test/loop.sh FILE... [N]' >&2; exit 2; }
files=("$@")
n=20
if [[ ${files[-1]} =~ ^[0-9]+$ ]]; then n=${files[-1]}; unset 'files[-1]'; fi
((${#files[@]})) || { echo 'usage: test/loop.sh FILE... [N]' >&2; exit 2; }
logs=${LOOP_LOGS:-$(mktemp -d /tmp/gatemesh-loop-XXXXXX)}
mkdir -p "$logs"
tap build >/dev/null
node test/setup.ts

declare -A passed failed
for file in "${files[@]}"; do passed[$file]=0; failed[$file]=0; done
for i in $(seq 1 "$n"); do
  for file in "${files[@]}"; do
    dir="$logs/$(basename "$file" .ts)"
    mkdir -p "$dir"
    run="loop-$$-$i-$(date +%s)"
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    start=$SECONDS
    tmp="$dir/tmp-$i"
    mkdir -p "$tmp"
    GATEMESH_TEST_RUN=$run GATEMESH_KEEP_TEST_DIRS=1 TMPDIR=$tmp tap --reporter=tap "$file" >"$dir/run-$i.log" 2>&1
    status=$?
    secs=$((SECONDS - start))
    verdict=pass
    ((status == 0)) || verdict=FAIL
    if left=$(bash test/leftovers.sh "$run" --wait 20 --kill); then left=''; else
      verdict=FAIL
      printf 'left running after the run:\n%s\n' "$left" >>"$dir/run-$i.log"
    fi
    if [[ $verdict == pass ]]; then passed[$file]=$((passed[$file] + 1)); rm -rf "$tmp"; else failed[$file]=$((failed[$file] + 1)); fi
    why=''
    [[ $verdict == FAIL ]] && why=$(grep -m3 -E '^\s*not ok|timed out after|^left running' "$dir/run-$i.log" | tr -s ' ' | cut -c1-200 | paste -sd'|')
    echo "$(date -u +%T) $file run $i/$n: $verdict ${secs}s (load before: $load)${left:+ leftovers: $(wc -l <<<"$left")}${why:+ -- $why}"
  done
done
total=0
for file in "${files[@]}"; do
  echo "$file: ${passed[$file]}/$n passed, ${failed[$file]} failed (logs in $logs/$(basename "$file" .ts))"
  total=$((total + failed[$file]))
done
((total == 0))
