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

# Assignment (not `eval "$(…)"`) so a failing install stops the run.
tools_env="$(bash tests/install-tools.sh --print-env)"
eval "$tools_env"
echo "==> tools ready: $((SECONDS - started)) s" >&2

step "cargo fmt --check" cargo fmt --all --check
step "cargo clippy" cargo clippy --all-targets --locked -- -D warnings
step "cargo test" cargo test --locked
echo "==> tests/run.sh: all passed in $((SECONDS - started)) s" >&2
