#!/usr/bin/env bash
# bench/ab.sh: the same 1:1 load against several tern-server binaries, alternated, so a
# change is measured against its parent on one machine in one sitting (noise from the
# rest of the machine then falls on every binary alike).
#
#   bench/ab.sh OLD_BIN NEW_BIN [MORE_BINS...]     ROUNDS=3 by default
#
# Each round runs, for each binary in turn, what bench/compare.sh runs for tern: one-to-one
# at 2,000 msg/s for 20 s, then the overload run (30,000 msg/s offered for 10 s), 10 pairs,
# the server pinned to CPU 0 and the generator to CPU 1. Reports go to $OUT/reports.jsonl
# (default target/ab/<time>); a summary (achieved rate, e2e p99, server CPU per binary) is
# printed at the end. Uses target/release/tern-bench (NO_BUILD=1 to skip building it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ab.sh OLD_BIN NEW_BIN [MORE_BINS...]" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/ab/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -p tern-bench >&2
BENCH=target/release/tern-bench
COMMON=(--json --heartbeat-secs 30 --login-concurrency 16 --server-cpu 0 --pin-cpu 1
  --server-arg=--password-hash-memory-kib=1024 --server-arg=--password-hash-iterations=1)
for r in $(seq 1 "$ROUNDS"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    echo "round $r: binary $i ($bin)" >&2
    "$BENCH" "${COMMON[@]}" --server-bin "$bin" --tag "bin$i" \
      one-to-one --pairs 10 --rate 2000 --duration 20 >>"$OUT/reports.jsonl" 2>>"$OUT/bench.log"
    "$BENCH" "${COMMON[@]}" --server-bin "$bin" --tag "bin$i-overload" --drain-secs 5 \
      one-to-one --pairs 10 --rate 30000 --duration 10 >>"$OUT/reports.jsonl" 2>>"$OUT/bench.log"
  done
done
python3 - "$OUT/reports.jsonl" "$@" <<'PY'
import json, statistics, sys
path, bins = sys.argv[1], sys.argv[2:]
rows = {}
for line in open(path):
    r = json.loads(line)
    tag = r["scenario"].split()[-1]
    e2e = next(v for k, v in r["latency"].items() if k.startswith("e2e"))
    rows.setdefault(tag, []).append((r["achieved_rate"], e2e["p99_ms"], r["server"]["cpu_pct_of_one_core"]))
for tag, v in rows.items():
    n = int(tag[3:].split("-")[0])
    print(f"{tag:16} {bins[n - 1]}: msg/s {[round(x[0]) for x in v]} (median {round(statistics.median(x[0] for x in v))}), "
          f"e2e p99 ms {[round(x[1], 1) for x in v]}, server CPU % {[x[2] for x in v]}")
PY
