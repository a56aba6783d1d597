#!/usr/bin/env bash
# bench/compare.sh: tern against the systems users would pick instead, through the same
# generator (tern-bench), on this machine, in one run; prints one table with tern's
# ratio to each peer.
#
#   bench/compare.sh              default run (about 20 minutes on a 2-core box)
#   QUICK=1 bench/compare.sh      smoke run (about 5 minutes)
#   bench/compare.sh --help       this text
#
# Scenarios (SCENARIOS, in this order; every system runs the ones it supports):
#   one-to-one           P sender/receiver pairs at a modest fixed rate (open loop): the
#                        latency rows (p50/p99/max from each message's intended send time
#                        to the recipient having it) and server CPU at that rate
#   one-to-one-overload  the same at a rate far above what any system sustains here: the
#                        achieved rate is the system's 1:1 capacity (msg/s)
#   fanout               one group of M online members, 1 sender at a modest rate: latency
#                        until the last member has each message
#   fanout-overload      the same far above capacity: deliveries/s the system sustains
#   idle                 ramp to N connected, subscribed (tern: logged-in) idle connections
#                        and hold: server RSS per connection (the key figure), connection
#                        setup rate, idle CPU
#   storm                N devices offline while M messages arrive for each, then all
#                        come back at once: time until every device has all it missed
#
# Environment:
#   QUICK=1       smaller, shorter runs (smoke test)
#   PEERS="..."   subset of: mosquitto mosquitto-tls nats nats-tls ejabberd relay
#   SCENARIOS=".." subset of the scenarios above
#   OUT=dir       where the raw reports, log and table go (default target/compare/<time>)
#   NO_BUILD=1    use the release binaries as they are
#   NO_PIN=1      do not pin CPUs
#   OVER_RATE=n   msg/s offered in one-to-one-overload (default 30000, QUICK 20000).
#                 mosquitto, NATS and the relay reach the default here (the relay
#                 did 99,993 msg/s of 100,000 offered at 83.5% of its core, see
#                 docs/BENCHMARKS.md): their overload rows then show the offered
#                 rate, a lower bound of their capacity
#   MQTT_PORT, NATS_PORT, NATS_HTTP_PORT, XMPP_PORT, RELAY_PORT  the peers' ports
#
# Peers (installed from Debian packages if missing), each started on 127.0.0.1 with a
# config from bench/peers/ and a fresh temp data dir for every scenario:
#   mosquitto      MQTT 3.1.1, QoS 1, persistent sessions (clean_session=false)
#                  -> one-to-one, fanout, idle, storm
#   mosquitto-tls  the same over TLS 1.3 (listener certfile/keyfile, tls_version
#                  tlsv1.3) -> one-to-one, fanout, idle
#   nats           nats-server, JetStream, file storage, durable pull consumers
#                  -> one-to-one, fanout; idle = a core NATS connection with one
#                  subscription to its own subject (no JetStream consumer)
#   nats-tls       the same over TLS 1.3 (tls {} block; the client upgrades after INFO)
#   ejabberd       XMPP, stream management, offline storage -> one-to-one, idle, storm
#                  (plain TCP: no TLS row)
#   relay          "bare TLS relay (ceiling)": `tern-bench relay`, a TLS 1.3 relay in
#                  bench/src/relay.rs that hands each frame to the recipient's
#                  connection and acks; no store, no fsync, no sessions. The physical
#                  ceiling of this box for TLS messaging -> one-to-one, fanout, idle
# TLS peers get a CA and server certificate made at run time into their temp dir
# (`tern-bench make-certs DIR`); every TLS client is rustls, TLS 1.3 only, ring, as tern.
#
# Durability each system was given (what an ack means):
#   tern         the SendAck leaves only after the message's group commit has been
#                fsync'd (sled flush); "tern (flush per write)" = --group-commit false;
#                "tern (read diffusion)" = the fanout group as a read-diffusion group
#                (--group-fanout-threshold 100), as groups above 500 members are
#   mosquitto    PUBACK = in the broker's memory; persistence writes the whole in-memory
#                database to disk on autosave (autosave_interval 1800 s) and at shutdown.
#                No per-message fsync setting exists.
#   nats         PubAck = in the stream's block file in the OS page cache; the file store
#                fsyncs on an internal interval. This is the strongest durability one
#                nats-server 2.9 offers: its jetstream block rejects sync_interval and
#                sync ('unknown field': the option, with "always" = fsync every write,
#                is 2.10+), the 2.9 stream config has no sync option (storage: file is
#                the durable choice; replicas > 1 needs a cluster, and on one box would
#                still be page cache only). Checked on 2.9.10 with this config: a 5 s,
#                5,000-message one-to-one run under `strace -f` made 5,000 pwrite64
#                calls on the stream's block file and 0 fsync/fdatasync.
#   ejabberd     <a/> = the server has handled the stanza (routed it, or stored it
#                offline); offline messages go to a mnesia disc_only_copies table (a dets
#                file written through the page cache), not fsync'd per message.
#   relay        nothing is stored: an ack means the frame was handed to the recipients'
#                connections (offline recipients lose it).
# tern therefore gets the strongest durability in every row.
#
# CPU: the server under test (tern or peer) is pinned to CPU 0, the generator to CPU 1.
# tern's password hash cost is lowered for these runs (argon2id 1 MiB, 1 pass): the peers
# run without password hashing (MQTT and NATS anonymous, ejabberd plain passwords).
set -euo pipefail
case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo pipefail/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *) echo "usage: bench/compare.sh [--help] (settings go in environment variables)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=${QUICK:-0}
PEERS=${PEERS:-"mosquitto mosquitto-tls nats nats-tls ejabberd relay"}
# "overload" runs offer far more than any of the systems sustains on this box: the
# achieved rate is its capacity (the latency rows come from the modest-rate runs).
SCENARIOS=${SCENARIOS:-"one-to-one one-to-one-overload fanout fanout-overload idle storm"}
OUT=${OUT:-$ROOT/target/compare/$(date -u +%Y%m%dT%H%M%SZ)}
BENCH=$ROOT/target/release/tern-bench
REPORTS=$OUT/reports.jsonl
LOG=$OUT/bench.log
MQTT_PORT=${MQTT_PORT:-18831}
NATS_PORT=${NATS_PORT:-14223}
NATS_HTTP_PORT=${NATS_HTTP_PORT:-18223}
XMPP_PORT=${XMPP_PORT:-15223}
RELAY_PORT=${RELAY_PORT:-16223}

if [ "$QUICK" = 1 ]; then
  PAIRS=4 RATE=1000 DURATION=5
  OVER_RATE=${OVER_RATE:-20000} OVER_DURATION=2
  MEMBERS=100 FANOUT_RATE=10 FANOUT_DURATION=5
  FANOUT_OVER_RATE=200
  IDLE_N=500 IDLE_HOLD=3
  STORM_DEVICES=200 STORM_MISSED=20
else
  PAIRS=10 RATE=2000 DURATION=20
  OVER_RATE=${OVER_RATE:-30000} OVER_DURATION=10
  MEMBERS=500 FANOUT_RATE=20 FANOUT_DURATION=20
  FANOUT_OVER_RATE=200
  IDLE_N=5000 IDLE_HOLD=10
  STORM_DEVICES=1000 STORM_MISSED=50
fi

# Every system gets the same open-files limit (the idle scenario holds thousands of
# connections).
ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
: >"$REPORTS"
: >"$LOG"
say() { echo "compare: $*" >&2; }
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# --- build ------------------------------------------------------------------------
if [ "${NO_BUILD:-0}" != 1 ]; then
  say "building release binaries"
  if ! cargo build --release -p tern-bench -p tern-server >>"$LOG" 2>&1; then
    if [ -x "$BENCH" ] && [ -x target/release/tern-server ]; then
      say "WARNING: the build failed (see $LOG); using the existing release binaries"
    else
      say "build failed, see $LOG"; exit 1
    fi
  fi
fi

# --- peers: install ---------------------------------------------------------------
# A peer "X-tls" is peer X over TLS; the relay is built with tern-bench.
declare -A PKG=([mosquitto]=mosquitto [nats]=nats-server [ejabberd]=ejabberd)
BASES=$(for p in $PEERS; do echo "${p%-tls}"; done | awk '!seen[$0]++')
missing=()
for p in $BASES; do
  [ "$p" = relay ] && continue
  dpkg -s "${PKG[$p]}" >/dev/null 2>&1 || missing+=("${PKG[$p]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update >>"$LOG" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >>"$LOG" 2>&1
fi
declare -A VERSION
for p in $BASES; do
  [ "$p" = relay ] && continue
  VERSION[$p]=$(dpkg-query -W -f='${Version}' "${PKG[$p]}")
done

# --- peers: start / stop ----------------------------------------------------------
PIN=(taskset -c 0)
BENCH_PIN=(--server-cpu 0 --pin-cpu 1)
if [ "${NO_PIN:-0}" = 1 ]; then PIN=(); BENCH_PIN=(); fi

PEER_PID=""
PEER_DIR=""
PEER_STOP=""

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

stop_peer() {
  if [ -n "$PEER_STOP" ]; then eval "$PEER_STOP" >>"$LOG" 2>&1 || true; fi
  if [ -n "$PEER_PID" ] && kill -0 "$PEER_PID" 2>/dev/null; then
    kill "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PEER_PID" 2>/dev/null || true
  fi
  if [ -n "$PEER_DIR" ]; then rm -rf "$PEER_DIR"; fi
  PEER_PID="" PEER_DIR="" PEER_STOP=""
}
trap stop_peer EXIT
trap 'exit 130' INT TERM

fill() { # template out
  sed -e "s#@DATA@#$PEER_DIR#g" -e "s#@PORT@#$PORT#g" -e "s#@HTTP_PORT@#$NATS_HTTP_PORT#g" "$1" >"$2"
}

make_certs() { # CA, server certificate and key into $PEER_DIR
  "$BENCH" make-certs "$PEER_DIR" >>"$LOG" 2>&1
}

start_mosquitto() { # tls (0/1)
  PORT=$MQTT_PORT
  port_free "$PORT" || { say "port $PORT is busy"; return 1; }
  PEER_DIR=$(mktemp -d /tmp/tern-compare-mosquitto.XXXXXX)
  fill bench/peers/mosquitto.conf "$PEER_DIR/mosquitto.conf"
  if [ "$1" = 1 ]; then
    make_certs
    # Listener options go after their listener line.
    printf 'cafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.3\n' \
      "$PEER_DIR/ca.pem" "$PEER_DIR/server.pem" "$PEER_DIR/server.key" >"$PEER_DIR/tls.conf"
    sed -i "/^listener /r $PEER_DIR/tls.conf" "$PEER_DIR/mosquitto.conf"
  fi
  chown -R mosquitto: "$PEER_DIR" 2>/dev/null || true
  "${PIN[@]}" mosquitto -c "$PEER_DIR/mosquitto.conf" >>"$LOG" 2>&1 &
  PEER_PID=$!
  wait_port "$PORT" 10
}

start_nats() { # tls (0/1)
  PORT=$NATS_PORT
  port_free "$PORT" || { say "port $PORT is busy"; return 1; }
  PEER_DIR=$(mktemp -d /tmp/tern-compare-nats.XXXXXX)
  fill bench/peers/nats.conf "$PEER_DIR/nats.conf"
  if [ "$1" = 1 ]; then
    make_certs
    # timeout: the handshake deadline (default 0.5 s; the idle ramp queues handshakes).
    printf 'tls {\n  cert_file: "%s"\n  key_file: "%s"\n  timeout: 5\n}\n' \
      "$PEER_DIR/server.pem" "$PEER_DIR/server.key" >>"$PEER_DIR/nats.conf"
  fi
  "${PIN[@]}" nats-server -c "$PEER_DIR/nats.conf" >"$PEER_DIR/nats.log" 2>&1 &
  PEER_PID=$!
  wait_port "$PORT" 10
}

start_relay() { # (always TLS)
  PORT=$RELAY_PORT
  port_free "$PORT" || { say "port $PORT is busy"; return 1; }
  PEER_DIR=$(mktemp -d /tmp/tern-compare-relay.XXXXXX)
  make_certs
  "${PIN[@]}" "$BENCH" relay --listen "127.0.0.1:$PORT" --cert "$PEER_DIR/server.pem" \
    --key "$PEER_DIR/server.key" >>"$LOG" 2>&1 &
  PEER_PID=$!
  wait_port "$PORT" 10
}

start_ejabberd() { # (no TLS row)
  PORT=$XMPP_PORT
  port_free "$PORT" || { say "port $PORT is busy"; return 1; }
  PEER_DIR=$(mktemp -d /tmp/tern-compare-ejabberd.XXXXXX)
  mkdir -p "$PEER_DIR/db" "$PEER_DIR/log"
  fill bench/peers/ejabberd.yml "$PEER_DIR/ejabberd.yml"
  cp bench/peers/ejabberdctl.cfg "$PEER_DIR/ejabberdctl.cfg"
  chown -R ejabberd: "$PEER_DIR"
  local node="tern-bench-$$@localhost"
  local epmd_before
  epmd_before=$(pgrep -x epmd || true)
  # ejabberdctl is run as the ejabberd user directly (setpriv, not its own su: su's PAM
  # session puts the open-files limit back to 1024, and ejabberd dies of it at ~1000
  # connections); "foreground" keeps the node our child.
  local ctl=(setpriv --reuid ejabberd --regid ejabberd --init-groups
    env HOME=/var/lib/ejabberd ejabberdctl --config "$PEER_DIR/ejabberd.yml"
    --ctl-config "$PEER_DIR/ejabberdctl.cfg" --spool "$PEER_DIR/db"
    --logs "$PEER_DIR/log" --node "$node")
  (cd "$PEER_DIR" && exec "${PIN[@]}" "${ctl[@]}" foreground >>"$PEER_DIR/log/console.log" 2>&1) &
  local wrapper=$!
  PEER_STOP="${ctl[*]} stop"
  # The node starts an epmd daemon if none runs; stop it too if it is ours.
  if [ -z "$epmd_before" ]; then
    PEER_STOP="$PEER_STOP; sleep 1; p=\$(pgrep -x -u ejabberd epmd) && kill \$p"
  fi
  if ! wait_port "$PORT" 60; then
    say "ejabberd did not open port $PORT; log:"; tail -20 "$PEER_DIR"/log/*.log >&2 || true
    PEER_PID=$wrapper
    return 1
  fi
  # The Erlang VM (beam.smp) whose CPU and memory count, not the wrapper script.
  PEER_PID=$(ss -ltnpH "sport = :$PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
  [ -n "$PEER_PID" ] || PEER_PID=$wrapper
}

# --- runs -------------------------------------------------------------------------
applies() { # peer scenario
  case "$1:$2" in
    mosquitto:*) return 0 ;;
    mosquitto-tls:storm) return 1 ;;
    mosquitto-tls:*) return 0 ;;
    nats:one-to-one* | nats:fanout* | nats:idle) return 0 ;;
    nats-tls:one-to-one* | nats-tls:fanout* | nats-tls:idle) return 0 ;;
    ejabberd:one-to-one* | ejabberd:idle | ejabberd:storm) return 0 ;;
    relay:one-to-one* | relay:fanout* | relay:idle) return 0 ;;
  esac
  return 1
}

scenario_args() {
  case "$1" in
    one-to-one) echo "one-to-one --pairs $PAIRS --rate $RATE --duration $DURATION" ;;
    one-to-one-overload) echo "--tag overload --drain-secs 5 one-to-one --pairs $PAIRS --rate $OVER_RATE --duration $OVER_DURATION" ;;
    fanout) echo "fanout --members $MEMBERS --senders 1 --rate $FANOUT_RATE --duration $FANOUT_DURATION" ;;
    fanout-overload) echo "--tag overload --drain-secs 5 fanout --members $MEMBERS --senders 1 --rate $FANOUT_OVER_RATE --duration $OVER_DURATION" ;;
    idle) echo "idle --connections $IDLE_N --hold-secs $IDLE_HOLD" ;;
    storm) echo "storm --devices $STORM_DEVICES --missed $STORM_MISSED --reconnect resume" ;;
  esac
}

COMMON=(--json --heartbeat-secs 30 --login-concurrency 16 "${BENCH_PIN[@]}")
TERN_ARGS=(--server-arg=--password-hash-memory-kib=1024 --server-arg=--password-hash-iterations=1)
FAILED=()

bench() { # system args...
  local system=$1; shift
  say "$system: tern-bench $*"
  echo "### $system: $*" >>"$LOG"
  if ! "$BENCH" "${COMMON[@]}" --system "$system" "$@" >>"$REPORTS" 2>>"$LOG"; then
    say "$system: FAILED (see $LOG)"
    FAILED+=("$system $s")
    return 1
  fi
}

for s in $SCENARIOS; do
  # shellcheck disable=SC2207
  args=($(scenario_args "$s"))
  bench tern "${TERN_ARGS[@]}" "${args[@]}" || true
  if [[ $s == one-to-one* ]]; then
    bench "tern (flush per write)" "${TERN_ARGS[@]}" --server-arg=--group-commit --server-arg=false "${args[@]}" || true
  fi
  if [[ $s == fanout* ]]; then
    # The same group as a read-diffusion group (what groups above the fan-out threshold,
    # default 500 members, are): one timeline write per message instead of one inbox
    # copy per member.
    bench "tern (read diffusion)" "${TERN_ARGS[@]}" --server-arg=--group-fanout-threshold=100 "${args[@]}" || true
  fi
  if [[ $s == idle ]]; then
    # Connection setup the way the SDK reconnects: TLS session ticket + token Resume
    # (every connection logs in untimed first, drops, and the reconnect ramp is timed).
    bench "tern (reconnect by resume)" "${TERN_ARGS[@]}" "${args[@]}" --reconnect resume || true
  fi
  for p in $PEERS; do
    applies "$p" "$s" || continue
    base=${p%-tls}
    tls=0 ca=()
    label="$base ${VERSION[$base]:-}"
    if [ "$p" != "$base" ]; then tls=1 label="$label (TLS)"; fi
    if [ "$base" = relay ]; then tls=1 label="bare TLS relay (ceiling)"; fi
    if ! "start_$base" "$tls"; then
      say "$label: could not start"
      FAILED+=("$label $s (start)")
      stop_peer
      continue
    fi
    if [ "$tls" = 1 ]; then ca=(--peer-ca "$PEER_DIR/ca.pem"); fi
    bench "$label" --peer "$base" --peer-addr "127.0.0.1:$PORT" --server-pid "$PEER_PID" "${ca[@]}" "${args[@]}" || true
    stop_peer
  done
done

# --- table ------------------------------------------------------------------------
{
  echo
  echo "== tern vs peers: same generator, same machine, one run ($(date -u +%FT%TZ), $(nproc) CPUs, QUICK=$QUICK) =="
  echo "parameters: one-to-one ${PAIRS} pairs at ${RATE} msg/s for ${DURATION} s; fanout ${MEMBERS} members, 1 sender, ${FANOUT_RATE} msg/s for ${FANOUT_DURATION} s;"
  echo "  idle ${IDLE_N} connections held ${IDLE_HOLD} s (heartbeat/keep-alive 30 s); storm ${STORM_DEVICES} devices x ${STORM_MISSED} missed messages; body 100 bytes"
  echo "latency: open loop, from each message's intended send time to the recipient having it (one-to-one: p50/p99/max of"
  echo "  every delivery; fanout: of the last member; idle: connect+login; storm: storm start -> device has all it missed)"
  echo "ratios: tern / peer. thru > 1 = tern moved more; p99 < 1 = tern faster; key < 1 = tern smaller/faster (idle: server RSS"
  echo "  per connection; storm: time until every device had all it missed). srv RSS: at the end (storm: peak VmHWM)."
  echo "missing: not delivered by the end of the drain (overload rows: 5 s after the schedule; storm: devices incomplete)."
  echo "durability: tern acks after an fsync'd group commit ('flush per write' = one flush per message);"
  echo "  mosquitto ${VERSION[mosquitto]:-(not run)}: PUBACK from memory, DB saved on autosave (1800 s) and shutdown;"
  echo "  nats-server ${VERSION[nats]:-(not run)}: PubAck from the file store via the page cache, fsync on an internal interval (no sync_interval option in 2.9);"
  echo "  ejabberd ${VERSION[ejabberd]:-(not run)}: <a/> after the stanza is handled; offline messages in mnesia disc_only_copies (dets via the page cache, no fsync per message)."
  echo "  bare TLS relay (ceiling): nothing stored, an ack = handed to the recipients' connections (tern-bench relay)."
  echo "transport: tern TLS 1.3 over TCP; peers plain TCP on loopback, '(TLS)' rows TLS 1.3 (rustls/ring clients, as tern's);"
  echo "  nats idle: a core NATS connection with one subscription (no JetStream consumer). CPUs: server 0, generator 1."
  echo "load average at start: $LOAD0; at end: $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the box shows here)"
  echo
  "$BENCH" compare-table "$REPORTS"
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo
    for f in "${FAILED[@]}"; do echo "failed: $f"; done
  fi
  echo
  echo "raw reports: $REPORTS; log: $LOG; took $(($(date +%s) - T0)) s"
} | tee "$OUT/table.txt"
