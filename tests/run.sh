#!/usr/bin/env bash
# The project's test command (README, CI): installs the tools the tests drive, then checks
# formatting, lints, and runs every test. CI=true passes through to the tests, where a missing
# tool fails instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
step() {
  local name="$1"
  shift
  local t0=$SECONDS
  echo "==> $name" >&2
  "$@"
  echo "==> $name: $((SECONDS - t0)) s" >&2
}

# Leave the machine as found: a dockerd that tests/install-tools.sh started for this run (it
# writes the pid to dockerd.started-by-tests) is stopped when the run ends, passed or failed,
# so the user's own sessions do not find a daemon they never started (and start the stack on
# it). A daemon that was already running is left alone.
cache="${CLAUDE_TELEMETRY_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-telemetry-tests}"
stop_dockerd_we_started() {
  local marker="$cache/dockerd.started-by-tests" pid=""
  [ -e "$marker" ] || return 0
  pid="$(cat "$marker" 2>/dev/null)"
  [ -n "$pid" ] || pid="$(cat "$cache/dockerd.pid" 2>/dev/null || true)"
  rm -f "$marker"
  [ -n "$pid" ] || return 0
  local root=()
  [ "$(id -u)" = 0 ] || root=(sudo)
  echo "==> stopping the dockerd (pid $pid) tests/install-tools.sh started" >&2
  "${root[@]}" kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 300); do
    "${root[@]}" kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "==> dockerd $pid still running 30 s after SIGTERM" >&2
}
trap stop_dockerd_we_started EXIT

# Assignment (not `eval "$(…)"`) so a failing install stops the run.
tools_env="$(bash tests/install-tools.sh --print-env)"
eval "$tools_env"
echo "==> tools ready: $((SECONDS - started)) s" >&2

step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy" cargo clippy --all-targets --locked -- -D warnings
# --no-fail-fast: one failing test binary never hides the results of the others.
step "cargo test" cargo test --locked --no-fail-fast
echo "==> tests/run.sh: all passed in $((SECONDS - started)) s" >&2
