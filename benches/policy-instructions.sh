#!/usr/bin/env bash
# CPU cost of the relay policy per request, as executed instructions counted by valgrind
# (callgrind), which a busy shared machine does not distort the way it distorts wall time.
# For each configuration of benches/policy.rs: run N requests and 0 requests, subtract, divide.
# Usage: benches/policy-instructions.sh [N]   (needs valgrind; builds the bench first)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-300}"
bin=$(cargo bench --bench policy --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\/deps\/policy-[^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "bench binary not found" >&2; exit 1; }
instructions() { # $1 = configuration, $2 = requests
  POLICY_BENCH_ONLY="$1" POLICY_BENCH_ITERS="$2" \
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
base0=$(instructions none 0)
for signal in logs metrics; do
  pass=""
  for label in "pass-through (decode+encode)" "default policy" "keep text + redaction" "drop ids + merge points"; do
    total=$(instructions "$signal/$label" "$n")
    per=$(( (total - base0) / n ))
    if [ -z "$pass" ]; then
      pass=$per
      printf '%-8s %-30s %10d instructions/request\n' "$signal" "$label" "$per"
    else
      awk -v s="$signal" -v l="$label" -v p="$per" -v b="$pass" \
        'BEGIN { printf "%-8s %-30s %10d instructions/request  %+6.1f %%\n", s, l, p, (p / b - 1) * 100 }'
    fi
  done
done
