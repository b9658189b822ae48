#!/usr/bin/env bash
# Store size benchmark (issue 12): a million API requests as Claude Code 2.1.332 sends them
# (api_request event + cost/token points) through the store writer, then
#   - the file's size on disk and bytes per request,
#   - where the bytes go (sqlite3's dbstat, per table and index),
#   - `claude-telemetry report` (and --by day/session/model, --json) wall time and peak RSS
#     from /usr/bin/time -v, each run in a fresh process on the file.
# Targets: <= 300 MB per million requests; `report` <= 300 ms at <= 100 MiB.
# Usage: bash benches/store-size.sh [REQUESTS]   (default 1000000)
#        STORE_SIZE_KEEP=DIR keeps the store file there (e.g. to time a later migration of it).
# Needs: cargo, sqlite3 (with dbstat, as Debian builds it), GNU time at /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-1000000}"
work="$(mktemp -d "${TMPDIR:-/tmp}/store-size.XXXXXX")"
trap 'rm -rf "$work"' EXIT

for tool in sqlite3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "store-size: $tool is missing" >&2; exit 1; }
done

# The release profile for both (`cargo bench` would build the crate again under its own).
bench=$(cargo build --release --locked --bin claude-telemetry --bench store-size \
  --message-format=json |
  python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "store-size" \
            and m.get("executable"):
        print(m["executable"])')
STORE_SIZE_REQUESTS="$requests" STORE_SIZE_DIR="$work/data" "$bench"

db="$work/data/store.db"
echo "store-size: bytes per table (dbstat: pages used by each table and its indexes)"
sqlite3 "$db" "
  SELECT printf('  %-28s %10.1f MB %8.1f B/request  %10d rows-or-cells', name,
                sum(pgsize) / 1e6, sum(pgsize) * 1.0 / $requests, sum(ncell))
  FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC;"

bin="${CARGO_TARGET_DIR:-$PWD/target}/release/claude-telemetry"
export CLAUDE_TELEMETRY_DATA_DIR="$work/data"
export CLAUDE_TELEMETRY_CONFIG_DIR="$work/config"
export CLAUDE_TELEMETRY_CACHE_DIR="$work/cache"
mkdir -p "$work/config" "$work/cache"
for args in "" "--by day" "--by session" "--by model" "--by day --json"; do
  # First run opens the file cold-ish (the OS cache holds it after the bench); report the
  # median of three.
  times=()
  for _ in 1 2 3; do
    # shellcheck disable=SC2086
    /usr/bin/time -v "$bin" report $args >/dev/null 2>"$work/time.txt"
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    ms=$(python3 -c "import sys; p=sys.argv[1].split(':'); print(round((float(p[-1]) + 60*float(p[-2]))*1000))" "$wall")
    times+=("$ms $rss")
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
  awk -v a="${args:-(summary)}" -v m="$median" 'BEGIN { split(m, f, " ");
    printf "store-size: report %-16s median %5d ms, peak RSS %6.1f MiB\n", a, f[1], f[2] / 1024 }'
done
if [ -n "${STORE_SIZE_KEEP:-}" ]; then
  mkdir -p "$STORE_SIZE_KEEP" && cp "$db" "$STORE_SIZE_KEEP/store.db"
  echo "store-size: kept $STORE_SIZE_KEEP/store.db"
fi
