#!/usr/bin/env bash
# Status-line latency: median and p99 wall time of `claude-telemetry statusline`, each run a
# cold process, against a store holding a year of 1,000,000 requests (28 sessions a day): 90 %
# seen by telemetry (api_request rows and their hourly rollup), 10 % only in imported
# transcripts, all of them in the request ledger and its rollup, plus 120 days of limit
# samples (30 days past the retention: the first refreshes each prune a batch). Runs alternate
# between no `[budget]` and daily + weekly + monthly budgets (the status line then also reads
# three standings). With PEER (another build, e.g. main's) its runs alternate with BINARY's on
# the same store. Usage: benches/statusline.sh [BINARY] [RUNS] [PEER]
set -euo pipefail
BIN=${1:-target/release/claude-telemetry}
RUNS=${2:-200}
PEER=${3:-}
PY=${CLAUDE_TELEMETRY_TEST_PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CLAUDE_TELEMETRY_DATA_DIR="$WORK/data" CLAUDE_TELEMETRY_CONFIG_DIR="$WORK/config"
export CLAUDE_TELEMETRY_POLICY_FILE="$WORK/none.toml"
echo '{}' | "$BIN" statusline >/dev/null   # creates and migrates the store
"$PY" - "$WORK/data/store.db" "$BIN" "$RUNS" "$PEER" <<'PY'
import sqlite3, sys, time, subprocess, json, statistics
db, binary, runs, peer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = sqlite3.connect(db)
now = int(time.time()); start = now - 1_000_000 * 31   # the newest request is now
rows, ledger = [], []
for i in range(1_000_000):
    t = start + i * 31
    session = i // 36 + 1
    if i % 10 == 0:   # imported history: only a transcript saw it
        ledger.append((f"msg:{i}", t, session, 2, 1000 + i % 500, 40, 300, 60, None, 2))
    else:
        rows.append((t * 10**9, session, "claude-sonnet-4-6", 0.01))
        ledger.append((f"req_{i}", t, session, 0, 1000 + i % 500, 40, 300, 60, 0.01, 1))
# Schema 7: a relayed api_request event with a request id is its ledger row (event_ns set);
# `api_requests` is a view over those and the unkeyed rows.
hourly = {}
for (tns, s, m, cost) in rows:
    k = (tns // 10**9 // 3600 * 3600, f"s{s}", m, "")
    hourly[k] = hourly.get(k, 0) + cost
c.executemany("INSERT INTO usage_hourly(hour, session_id, model, project, cost_usd, api_requests) VALUES (?,?,?,?,?,1)",
              [(*k, v) for k, v in hourly.items()])
# The ledger: labels (sessions 1.., model), requests, and request_hourly kept as ledger.rs does.
MODEL = 10**7
c.executemany("INSERT INTO labels(id, kind, name) VALUES (?,0,?)",
              [(s, f"s{s}") for s in range(1, 1_000_000 // 36 + 2)])
c.execute("INSERT INTO labels(id, kind, name) VALUES (?,1,'claude-sonnet-4-6')", (MODEL,))
c.executemany("INSERT INTO requests(key, time_s, session, model, project, branch, input_tokens,"
              " output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, sources, event_ns)"
              " VALUES (?,?,?,?,0,0,?,?,?,?,?,?,?)",
              [(k, t, s, MODEL, i, o, cr, cc, cost, src, t * 10**9 if src == 1 else None)
               for (k, t, s, _, i, o, cr, cc, cost, src) in ledger])
roll = {}
for (k, t, s, _, i, o, cr, cc, cost, src) in ledger:
    # requests, telemetry_only, transcript_only, 4 token kinds, 4 estimated kinds, cost micros
    r = roll.setdefault((t // 3600 * 3600, s), [0] * 12)
    r[0] += 1; r[3] += i; r[4] += o; r[5] += cr; r[6] += cc
    if src == 1:
        r[1] += 1; r[11] += round(cost * 1e6)
    else:
        r[2] += 1; r[7] += i; r[8] += o; r[9] += cr; r[10] += cc
c.executemany("INSERT INTO request_hourly(hour, session, model, project, branch, long, requests,"
              " telemetry_only, transcript_only, input_tokens, output_tokens, cache_read_tokens,"
              " cache_creation_tokens, est_input_tokens, est_output_tokens, est_cache_read_tokens,"
              " est_cache_5m_tokens, cost_usd_micros) VALUES (?,?,?,0,0,0,?,?,?,?,?,?,?,?,?,?,?,?)",
              [(h, s, MODEL, *r) for (h, s), r in roll.items()])
c.executemany("INSERT INTO limit_samples(time_ns, window, used_pct, resets_at, session_id) VALUES (?,?,?,?,?)",
              [((now - 86400 * 120 + i * 80) * 10**9, w, (i % 900) / 9, now + 3600, "s")
               for i in range(0, 129_600) for w in ("five_hour",)])
c.commit(); c.close()
inp = json.dumps({"session_id": "s", "cost": {"total_cost_usd": 1.5},
                  "rate_limits": {"five_hour": {"used_percentage": 40, "resets_at": now + 3600},
                                  "seven_day": {"used_percentage": 12, "resets_at": now + 86400}}}).encode()
import os
budgets = dict(os.environ, CLAUDE_TELEMETRY_BUDGET__DAILY="50", CLAUDE_TELEMETRY_BUDGET__WEEKLY="300",
               CLAUDE_TELEMETRY_BUDGET__MONTHLY="1000")
variants = [("no budget", binary, dict(os.environ)), ("3 budgets", binary, budgets)]
if peer:
    variants += [("peer no budget", peer, dict(os.environ)), ("peer 3 budgets", peer, budgets)]
times = {name: [] for name, _, _ in variants}
lines = {}
for _ in range(runs):
    for name, exe, env in variants:   # alternating, so all see the same machine load
        t0 = time.perf_counter()
        out = subprocess.run([exe, "statusline"], input=inp, capture_output=True, check=True, env=env)
        times[name].append((time.perf_counter() - t0) * 1000)
        lines[name] = out.stdout.decode().strip()
for name, _, _ in variants:
    t = sorted(times[name])
    print(f"line ({name}):", lines[name])
    print(f"statusline {name}: runs={runs} median={statistics.median(t):.2f} ms "
          f"p99={t[int(len(t)*0.99)-1]:.2f} ms")
PY
