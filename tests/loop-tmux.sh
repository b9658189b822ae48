#!/usr/bin/env bash
# Runs the tmux harness test N times in a row (default 20) and prints how many passed: the
# check that the interactive harness is stable (not part of the default run, tests/run.sh).
#
#   bash tests/loop-tmux.sh [N] [TEST NAME]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${1:-20}"
test_name="${2:-tmux_reports_every_exit_code_and_a_killing_signal}"
# The loop needs tmux only: no Docker daemon is started for it.
tools_env="$(CLAUDE_TELEMETRY_TEST_NO_DOCKER=1 bash tests/install-tools.sh --print-env)"
eval "$tools_env"

cargo test --locked --test harness --no-run >&2
passed=0
failed=0
started=$SECONDS
for i in $(seq 1 "$runs"); do
  log="$(mktemp)"
  if cargo test --locked --test harness -- --exact "$test_name" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i/$runs: ok" >&2
  else
    failed=$((failed + 1))
    echo "run $i/$runs: FAILED" >&2
    tail -n 30 "$log" >&2
  fi
  rm -f "$log"
done
echo "loop-tmux: $test_name: $passed of $runs passed, $failed failed, $((SECONDS - started)) s"
[ "$failed" = 0 ]
