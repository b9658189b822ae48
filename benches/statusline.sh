#!/usr/bin/env bash
# Status-line latency: median and p99 wall time of `claude-telemetry statusline`, each run a
# cold process, against a store holding 1,000,000 api_request rows and their hourly rollup
# (a year of 28 sessions a day), plus limit samples. Usage: benches/statusline.sh [BINARY] [RUNS]
set -euo pipefail
BIN=${1:-target/release/claude-telemetry}
RUNS=${2:-200}
PY=${CLAUDE_TELEMETRY_TEST_PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CLAUDE_TELEMETRY_DATA_DIR="$WORK/data" CLAUDE_TELEMETRY_CONFIG_DIR="$WORK/config"
export CLAUDE_TELEMETRY_POLICY_FILE="$WORK/none.toml"
echo '{}' | "$BIN" statusline >/dev/null   # creates and migrates the store
"$PY" - "$WORK/data/store.db" "$BIN" "$RUNS" <<'PY'
import sqlite3, sys, time, subprocess, json, statistics
db, binary, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db)
now = int(time.time()); start = now - 365 * 86400
rows = []
for i in range(1_000_000):
    t = start + i * 31
    rows.append((t * 10**9, i // 36 + 1, "claude-sonnet-4-6", 0.01))
c.executemany("INSERT INTO api_requests_unkeyed(time_ns, session, model, cost_usd) VALUES (?,?,?,?)", rows)
hourly = {}
for (tns, s, m, cost) in rows:
    k = (tns // 10**9 // 3600 * 3600, f"s{s}", m, "")
    hourly[k] = hourly.get(k, 0) + cost
c.executemany("INSERT INTO usage_hourly(hour, session_id, model, project, cost_usd, api_requests) VALUES (?,?,?,?,?,1)",
              [(*k, v) for k, v in hourly.items()])
c.executemany("INSERT INTO limit_samples(time_ns, window, used_pct, resets_at, session_id) VALUES (?,?,?,?,?)",
              [((now - 86400 * 30 + i * 20) * 10**9, w, (i % 900) / 9, now + 3600, "s")
               for i in range(0, 129_600) for w in ("five_hour",)])
c.commit(); c.close()
inp = json.dumps({"session_id": "s", "cost": {"total_cost_usd": 1.5},
                  "rate_limits": {"five_hour": {"used_percentage": 40, "resets_at": now + 3600},
                                  "seven_day": {"used_percentage": 12, "resets_at": now + 86400}}}).encode()
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    out = subprocess.run([binary, "statusline"], input=inp, capture_output=True, check=True)
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
print("line:", out.stdout.decode().strip())
print(f"statusline runs={runs} median={statistics.median(times):.2f} ms p99={times[int(len(times)*0.99)-1]:.2f} ms")
PY
