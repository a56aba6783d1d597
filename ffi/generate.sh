#!/usr/bin/env bash
# Generates the tern bindings: ffi/generate.sh [python|kotlin|swift|all] OUTDIR
#
# Builds the library (cargo build -p tern-ffi; PROFILE=release for a release build),
# then runs uniffi's generator (this crate's `uniffi-bindgen` binary, the same uniffi
# version as the library) on it in library mode. Writes into OUTDIR:
#   python: the package tern_ffi/ (__init__.py = the generated module with
#           ffi/python/atexit_hook.py appended, and libtern_ffi.so) and pyproject.toml:
#           import tern_ffi with OUTDIR on sys.path, or pip install OUTDIR
#   kotlin: uniffi/tern_ffi/tern_ffi.kt (package uniffi.tern_ffi; needs JNA at run time)
#   swift:  tern_ffi.swift, tern_ffiFFI.h (the C header), tern_ffiFFI.modulemap
# No formatter is run (ktlint / swift-format are not needed).
set -euo pipefail

usage() { echo "usage: $0 [python|kotlin|swift|all] OUTDIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
case "$1" in
  python|kotlin|swift) langs=("$1") ;;
  all) langs=(python kotlin swift) ;;
  *) usage ;;
esac
mkdir -p "$2"
out=$(cd "$2" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
profile=${PROFILE:-debug}
flags=()
[ "$profile" = release ] && flags=(--release)

cd "$root"
cargo build -p tern-ffi --lib --bin uniffi-bindgen "${flags[@]}"
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$root/target")
case "$(uname -s)" in
  Darwin) lib="$target/$profile/libtern_ffi.dylib" ;;
  *) lib="$target/$profile/libtern_ffi.so" ;;
esac
[ -f "$lib" ] || { echo "$lib not built" >&2; exit 1; }

args=()
for l in "${langs[@]}"; do args+=(--language "$l"); done
"$target/$profile/uniffi-bindgen" generate --library "$lib" "${args[@]}" --no-format --out-dir "$out"
for l in "${langs[@]}"; do
  if [ "$l" = python ]; then
    # A package: OUTDIR/tern_ffi/__init__.py + the library, and OUTDIR/pyproject.toml.
    mkdir -p "$out/tern_ffi"
    cat "$out/tern_ffi.py" ffi/python/atexit_hook.py > "$out/tern_ffi/__init__.py"
    rm "$out/tern_ffi.py"
    cp "$lib" "$out/tern_ffi/"
    cp ffi/python/pyproject.toml "$out/"
  fi
done
echo "generated ${langs[*]} bindings in $out"
