#!/usr/bin/env bash
# Fuzzes the admin HTTP API (docs/ADMIN_API.md) with schemathesis (PyPI) from the OpenAPI
# document the server itself serves: a real tern-server on free ports with a temp data dir
# and --admin-listen, the token from its admin.token file, a bounded run (about a minute),
# and failure on any 5xx, any answer outside the documented statuses, content types or
# response schemas.
#
# Usage: .ci/admin-api-fuzz.sh [path/to/tern-server]   (default: target/debug/tern-server)
# Installs python3-venv with apt-get when missing (CI runs as root on Debian), and
# schemathesis into a venv under ${TERN_FUZZ_VENV:-~/.cache/tern-schemathesis}.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/debug/tern-server}
[ -x "$bin" ] || { echo "admin-api-fuzz: no server binary at $bin (cargo build -p tern-server)"; exit 1; }
# Pinned: a new schemathesis may add checks; upgrade on purpose.
st_version=4.32.5
venv=${TERN_FUZZ_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/tern-schemathesis}
max_time=${TERN_FUZZ_SECONDS:-60}

if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  apt-get update && apt-get install -y --no-install-recommends python3 python3-venv
fi
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$st_version"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version"
fi
"$venv/bin/st" --version

data=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$data"
}
trap cleanup EXIT

# Cheap password hashes: the fuzzer creates many users and sets many passwords.
"$bin" --listen 127.0.0.1:0 --ws-listen off --data-dir "$data/d" --store-cache-mb 16 \
  --admin-listen 127.0.0.1:0 --password-hash-memory-kib 64 --password-hash-iterations 1 \
  >"$data/out.log" 2>"$data/err.log" &
pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(grep -o 'admin=http://[^/]*' "$data/out.log" 2>/dev/null | cut -d/ -f3 || true)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "admin-api-fuzz: the server did not start"; cat "$data/out.log" "$data/err.log"; exit 1
fi
token=$(cat "$data/d/admin.token")
base="http://$addr"
echo "admin-api-fuzz: server at $base (pid $pid)"

# Some data for the fuzzer to find: users, and their conversations with `system` (a
# broadcast notice); the chat protocol itself is not HTTP.
"$venv/bin/python" - "$base" "$token" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
for u in ["alice", "bob", "carol"]:
    post("/admin/v1/users", {"user": u, "password": "fuzz password"})
post("/admin/v1/messages", {"broadcast": True, "text": "hello from the fuzzer"})
PY

set +e
# From the temp dir: schemathesis keeps a cache in ./.schemathesis.
cd "$data"
"$venv/bin/st" run "$base/admin/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples 25 --max-time "$max_time" --request-timeout 10 \
  --workers 1 --no-color --output-sanitize true --generation-database none
st_status=$?
set -e

# The server must still be up and must not have panicked.
if ! kill -0 "$pid" 2>/dev/null; then
  echo "admin-api-fuzz: the server died"; tail -50 "$data/err.log"; exit 1
fi
if grep -q "panicked" "$data/err.log"; then
  echo "admin-api-fuzz: the server panicked"; grep -B2 -A10 panicked "$data/err.log" | head -60; exit 1
fi
if [ "$st_status" -ne 0 ]; then
  echo "admin-api-fuzz: schemathesis found failures (exit $st_status)"
  exit "$st_status"
fi
echo "admin-api-fuzz: ok"
