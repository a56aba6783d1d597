#!/usr/bin/env bash
# bench/callgrind.sh: server CPU per durable 1:1 message, in instructions (callgrind's Ir),
# a figure that repeats on a noisy machine where msg/s and CPU % do not.
#
#   bench/callgrind.sh [SERVER_BIN]      (default target/release/tern-server)
#
# Runs the server under `valgrind --tool=callgrind` twice with the same one-to-one load
# shape and duration but two rates (LOW and HIGH msg/s, 10 pairs, DURATION s), and prints
#   (Ir of the HIGH run - Ir of the LOW run) / (messages HIGH - messages LOW)
# so startup, logins, heartbeats and timers (the same in both runs) cancel out and what is
# left is the marginal cost of one message: receive, store, group commit, ack, push, the
# receiver's acks, and the search index following the timeline. Under valgrind the server
# runs ~50x slower, hence the low rates; --fair-sched=yes keeps sled's spinning threads
# from starving the others (without it the server sometimes took minutes to start). Counting starts once the server listens
# (its startup is left out). Environment: LOW (default 20), HIGH (100),
# DURATION (20), PORT (7651), SERVER_ARGS (more server flags, e.g. --search-enabled=false), KEEP=1 keeps the callgrind files (callgrind_annotate them).
# Each run's raw line goes to stderr; the last stdout line is the figure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tern-server}
BENCH=${BENCH:-target/release/tern-bench}
LOW=${LOW:-20} HIGH=${HIGH:-100} DURATION=${DURATION:-20} PORT=${PORT:-7651}
WORK=$(mktemp -d /tmp/tern-callgrind.XXXXXX)
trap '[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT

run() { # rate -> prints "Ir messages"
  local rate=$1 dir=$WORK/data-$1 out=$WORK/cg-$1.out
  valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$out" "$BIN" --data-dir "$dir" \
    --listen 127.0.0.1:$PORT --ws-listen off \
    --logins-per-address 1000000000 --conn-rate-limit 1000000000 --conn-rate-burst 1000000000 \
    --user-rate-limit 1000000000 --user-rate-burst 1000000000 \
    --password-hash-memory-kib 64 --password-hash-iterations 1 ${SERVER_ARGS:-} >"$WORK/server-$rate.log" 2>&1 &
  local SERVER=$!
  for _ in $(seq 600); do
    [ -f "$dir/certs/ca.pem" ] && (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.1
  done
  # Count from here: the server's startup (store, index, certificates) is left out.
  [ -f "$dir/certs/ca.pem" ] || { echo "the server did not start: $WORK/server-$rate.log" >&2; kill -9 $SERVER; exit 1; }
  callgrind_control -z $SERVER >/dev/null
  local report
  report=$("$BENCH" --json --server 127.0.0.1:$PORT --ca "$dir/certs/ca.pem" --drain-secs 30 \
    one-to-one --pairs 10 --rate "$rate" --duration "$DURATION") || { kill -9 $SERVER; exit 1; }
  kill -INT $SERVER
  wait $SERVER || true
  local ir msgs
  ir=$(sed -n 's/^summary: *//p' "$out")
  msgs=$(python3 -c 'import json,sys; r=json.loads(sys.stdin.readline()); print(r["counts"]["acked"])' <<<"$report")
  echo "rate $rate: Ir $ir, messages acked $msgs" >&2
  echo "$ir $msgs"
}

read -r ir_low n_low < <(run "$LOW")
read -r ir_high n_high < <(run "$HIGH")
python3 -c "
ir_low, n_low, ir_high, n_high = $ir_low, $n_low, $ir_high, $n_high
print(f'instructions per 1:1 message: {(ir_high - ir_low) / (n_high - n_low):,.0f} ((Ir {ir_high:,} - {ir_low:,}) / ({n_high} - {n_low} messages))')
"
