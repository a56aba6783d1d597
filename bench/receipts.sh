#!/usr/bin/env bash
# bench/receipts.sh: what read receipts cost per message. The same 1:1 load (what
# bench/compare.sh runs for tern: 10 pairs, 2,000 msg/s for 20 s, the server pinned to
# CPU 0 and the generator to CPU 1) with receivers that never send MarkRead, then with
# receivers that send one after every message (MarkRead up to it: a durable write of the
# read position, a ReadState answer, and a ReadReceipt push to the sender's device and to
# the reader's own), then every 10th message; alternated for ROUNDS rounds (default 3),
# so the machine's noise falls on each variant alike.
#
#   bench/receipts.sh [SERVER_BIN]     (default target/release/tern-server)
#
# Reports go to $OUT/reports.jsonl (default target/receipts/<time>); a summary (server
# CPU %, e2e p99, ack p99 per variant, each round and the median) is printed at the end.
# EVERY="0 1 10" chooses the variants; RATE, DURATION, PAIRS the load.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tern-server}
ROUNDS=${ROUNDS:-3}
EVERY=${EVERY:-0 1 10}
RATE=${RATE:-2000}
DURATION=${DURATION:-20}
PAIRS=${PAIRS:-10}
OUT=${OUT:-target/receipts/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -p tern-bench >&2
BENCH=target/release/tern-bench
COMMON=(--json --heartbeat-secs 30 --login-concurrency 16 --server-cpu 0 --pin-cpu 1
  --server-arg=--password-hash-memory-kib=1024 --server-arg=--password-hash-iterations=1)
for r in $(seq 1 "$ROUNDS"); do
  for n in $EVERY; do
    echo "round $r: mark-read-every $n" >&2
    "$BENCH" "${COMMON[@]}" --server-bin "$BIN" --tag "read$n" --mark-read-every "$n" \
      one-to-one --pairs "$PAIRS" --rate "$RATE" --duration "$DURATION" >>"$OUT/reports.jsonl" 2>>"$OUT/bench.log"
  done
done
python3 - "$OUT/reports.jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    tag = r["scenario"].split()[-1]
    lat = r["latency"]
    e2e = next(v for k, v in lat.items() if k.startswith("e2e"))
    ack = next(v for k, v in lat.items() if k.startswith("ack"))
    missing = r.get("counts", {}).get("missing", 0)
    rows.setdefault(tag, []).append((r["server"]["cpu_pct_of_one_core"], e2e["p99_ms"], ack["p99_ms"], r["achieved_rate"], missing))
med = lambda v: round(statistics.median(v), 2)
for tag, v in rows.items():
    print(f"{tag:8} server CPU % {[x[0] for x in v]} (median {med(x[0] for x in v)}); "
          f"e2e p99 ms {[round(x[1], 2) for x in v]} (median {med(x[1] for x in v)}); "
          f"ack p99 ms {[round(x[2], 2) for x in v]} (median {med(x[2] for x in v)}); "
          f"achieved {[round(x[3]) for x in v]}; missing {[x[4] for x in v]}")
PY
