#!/usr/bin/env bash
# Run the same tests N times and count the runs that fail: the check for tests that fail by chance.
#   bash .ci/repeat.sh 50 tests/train/test_distributed.py
# Logs of failing runs are kept in ${REPEAT_LOGS:-/tmp/cossl-repeat}.
set -uo pipefail
cd "$(dirname "$0")/.."
n=$1; shift
logs=${REPEAT_LOGS:-/tmp/cossl-repeat}
mkdir -p "$logs"
failed=0
start=$(date +%s)
for i in $(seq 1 "$n"); do
  if python -m pytest -q -p no:cacheprovider "$@" >"$logs/run_$i.log" 2>&1; then
    rm "$logs/run_$i.log"
  else
    failed=$((failed + 1))
    echo "run $i failed: $(grep -E '^(FAILED|ERROR)' "$logs/run_$i.log" | head -3 | tr '\n' ' ')"
  fi
  echo "run $i/$n done, $failed failed so far ($(( $(date +%s) - start )) s)"
done
echo "$((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
