#!/usr/bin/env bash
# History at scale, side by side with ccusage (issue 12):
#   (a) generates transcripts of N API requests (default 1,000,000, about 2.7 GB) in the format
#       the real Claude Code writes (benches/gen_transcripts.rs) into a temporary directory;
#   (b) runs `ccusage daily --json` on them (ccusage from npm, installed into the tests' cache),
#       timing it and its peak RSS (/usr/bin/time -v), and checks its token totals against the
#       generator's manifest;
#   (c) runs `claude-telemetry import --from DIR` (first, then again on unchanged files) and
#       `report --json --by model`, timing each with its peak RSS, and compares the totals with
#       ccusage's and the manifest's: tokens exactly, cost within 0.5 % per model both price.
# Targets: first import <= ccusage daily's time; re-import <= 100 ms; report <= 300 ms at
# <= 100 MiB. Everything generated is deleted at exit (also on failure or Ctrl-C).
# Usage: bash benches/history-vs-ccusage.sh [REQUESTS]     HISTORY_BENCH_SKIP_OURS=1 runs (a)+(b)
# Exit status: 0 when every check passed, 1 when one failed or a part could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
requests="${1:-1000000}"
CCUSAGE_VERSION=20.0.24
cache="${CLAUDE_TELEMETRY_TEST_CACHE:-$HOME/.cache/claude-telemetry-tests}"
work="$(mktemp -d "${TMPDIR:-/tmp}/history-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "history-bench: FAIL: $*" >&2; failed=1; }

for tool in cargo python3 node npm /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "history-bench: $tool is missing" >&2; exit 1; }
done

# Runs "$@" (stdout to $1) under GNU time; writes "<wall ms> <peak RSS KiB>" to $work/last.
timed() {
  local out="$1"; shift
  /usr/bin/time -v "$@" >"$out" 2>"$work/time.txt" || {
    cat "$work/time.txt" >&2; return 1; }
  python3 - "$work/time.txt" >"$work/last" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1).split(":")
secs = float(wall[-1]) + 60 * float(wall[-2]) + (3600 * float(wall[-3]) if len(wall) > 2 else 0)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
print(round(secs * 1000), rss)
EOF
}
fig() { awk -v what="$1" '{ printf "history-bench: %-34s %9.3f s, peak RSS %8.1f MiB\n", what, $1 / 1000, $2 / 1024 }' "$work/last"; }

# --- (a) transcripts ---------------------------------------------------------------------
claude_dir="$work/claude"
# Built with the release profile, as the binary below: `cargo bench` would build the crate a
# second time under the bench profile (minutes on a small machine) for a generator.
gen=$(cargo build --release --locked --bench gen_transcripts --message-format=json |
  python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gen_transcripts" \
            and m.get("executable"):
        print(m["executable"])')
"$gen" "$claude_dir" "$requests" "$work/manifest.json"
size=$(du -sb "$claude_dir" | cut -f1)
files=$(find "$claude_dir/projects" -name '*.jsonl' | wc -l)
echo "history-bench: transcripts: $requests requests in $files files, $(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }') on disk"

# --- (b) ccusage -------------------------------------------------------------------------
cc_dir="$cache/ccusage"
cc="$cc_dir/node_modules/.bin/ccusage"
if ! "$cc" --version 2>/dev/null | grep -q "$CCUSAGE_VERSION"; then
  echo "history-bench: npm: installing ccusage@$CCUSAGE_VERSION into $cc_dir"
  mkdir -p "$cc_dir"
  npm install --prefix "$cc_dir" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "ccusage@$CCUSAGE_VERSION" >/dev/null
  "$cc" --version >/dev/null || { echo "history-bench: ccusage not runnable from $cc_dir" >&2; exit 1; }
fi
mkdir -p "$work/home"
# HOME points at an empty directory: ccusage reads every agent it detects, only these files.
# --offline: its bundled prices (the machine may not reach a price list).
HOME="$work/home" CLAUDE_CONFIG_DIR="$claude_dir" \
  timed "$work/ccusage.json" "$cc" daily --json --offline
cp "$work/last" "$work/ccusage.last"
fig "ccusage daily --json ($("$cc" --version | tr -d '\n'))"

python3 - "$work/manifest.json" "$work/ccusage.json" <<'EOF' || fail "ccusage totals differ from the generated ones"
import json, sys
m = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))
want = {k: sum(v[k] for v in m["models"].values())
        for k in ("input", "output", "cache_read", "cache_creation")}
got = {"input": c["totals"]["inputTokens"], "output": c["totals"]["outputTokens"],
       "cache_read": c["totals"]["cacheReadTokens"],
       "cache_creation": c["totals"]["cacheCreationTokens"]}
print("history-bench: ccusage totals: %s tokens, $%.2f" % (
    ", ".join("%s %d" % kv for kv in got.items()), c["totals"]["totalCost"]))
bad = [k for k in want if want[k] != got[k]]
for k in bad:
    print("history-bench: ccusage %s tokens %d, generated %d" % (k, got[k], want[k]))
sys.exit(1 if bad else 0)
EOF

if [ -n "${HISTORY_BENCH_SKIP_OURS:-}" ]; then
  echo "history-bench: HISTORY_BENCH_SKIP_OURS set: claude-telemetry's part not run"
  exit "$failed"
fi

# --- (c) claude-telemetry import + report --------------------------------------------------
cargo build --release --locked --bin claude-telemetry
bin="$repo/target/release/claude-telemetry"
export HOME="$work/home" CLAUDE_CONFIG_DIR="$claude_dir"
export CLAUDE_TELEMETRY_DATA_DIR="$work/data" CLAUDE_TELEMETRY_CONFIG_DIR="$work/config" \
  CLAUDE_TELEMETRY_CACHE_DIR="$work/cache"
mkdir -p "$work/data" "$work/config" "$work/cache"
# An unknown word would be passed on to claude: look for the subcommand in our own help.
if ! "$bin" help 2>/dev/null | grep -qE '^\s+import\b'; then
  echo "history-bench: FAIL: this build has no 'claude-telemetry import' (issue 12's import);" \
    "part (c) cannot run. ccusage's figures above stand." >&2
  exit 1
fi
timed "$work/import1.json" "$bin" import --from "$claude_dir/projects" --json
cp "$work/last" "$work/import1.last"
fig "claude-telemetry import (first)"
timed "$work/import2.json" "$bin" import --from "$claude_dir/projects" --json
cp "$work/last" "$work/import2.last"
fig "claude-telemetry import (unchanged)"
for _ in 1 2; do timed "$work/report.json" "$bin" report --json --by model; done
cp "$work/last" "$work/report.last"
fig "claude-telemetry report --json"
store_size=$(du -sb "$work/data" | cut -f1)
echo "history-bench: store after import: $(awk -v s="$store_size" -v n="$requests" 'BEGIN { printf "%.1f MB (%.0f B per request)", s / 1e6, s / n }')"

python3 - "$work" <<'EOF' || failed=1
import json, sys, os
w = sys.argv[1]
ms = lambda name: [int(x) for x in open(os.path.join(w, name + ".last")).read().split()]
m = json.load(open(os.path.join(w, "manifest.json")))
c = json.load(open(os.path.join(w, "ccusage.json")))
r = json.load(open(os.path.join(w, "report.json")))
bad = []
def check(ok, what):
    print("history-bench: %-4s %s" % ("ok" if ok else "FAIL", what))
    if not ok:
        bad.append(what)
cc_ms, imp_ms, re_ms, rep = ms("ccusage")[0], ms("import1")[0], ms("import2")[0], ms("report")
check(imp_ms <= cc_ms, "first import %d ms <= ccusage daily %d ms" % (imp_ms, cc_ms))
check(re_ms <= 100, "re-import of unchanged files %d ms <= 100 ms" % re_ms)
check(rep[0] <= 300 and rep[1] <= 100 * 1024,
      "report %d ms <= 300 ms at %.1f MiB <= 100 MiB" % (rep[0], rep[1] / 1024))
try:
    rows = {row["key"]: row for row in r["breakdown"]["rows"]}
except (KeyError, TypeError) as e:
    sys.exit("history-bench: FAIL: report --json --by model has no breakdown.rows[].key (%s)" % e)
cc_models = {}
for day in c["daily"]:
    for b in day["modelBreakdowns"]:
        t = cc_models.setdefault(b["modelName"], {"input": 0, "output": 0, "cache_read": 0,
                                                  "cache_creation": 0, "cost": 0.0})
        t["input"] += b["inputTokens"]; t["output"] += b["outputTokens"]
        t["cache_read"] += b["cacheReadTokens"]; t["cache_creation"] += b["cacheCreationTokens"]
        t["cost"] += b["cost"]
for model, want in sorted(m["models"].items()):
    row = rows.get(model)
    if row is None:
        check(False, "%s: in the transcripts, not in report --by model" % model)
        continue
    tok = row["tokens"]
    ours = {"input": tok["input"], "output": tok["output"], "cache_read": tok["cache_read"],
            "cache_creation": tok["cache_creation"]}
    gen = {k: want[k] for k in ours}
    check(ours == gen, "%s tokens: ours %s, generated %s" % (model, ours, gen))
    theirs = cc_models.get(model)
    if theirs and theirs["cost"] > 0:
        diff = abs(row["cost_usd"] - theirs["cost"]) / theirs["cost"]
        check(diff <= 0.005, "%s cost: ours $%.2f, ccusage $%.2f (%.3f %% apart, <= 0.5 %%)"
              % (model, row["cost_usd"], theirs["cost"], diff * 100))
sys.exit(1 if bad else 0)
EOF
exit "$failed"
