#!/usr/bin/env python3
"""Heap per connection from a massif run (see docs/BENCHMARKS.md, "Why the memory targets
are missed").

usage: massif_per_conn.py MS_PRINT_OUTPUT BEFORE PEAK CONNECTIONS [REGEX]

Takes two detailed snapshots of `ms_print` output (BEFORE: the last one before the first
connection, PEAK: one with all connections open), attributes every allocation to the
innermost stack frame matching REGEX (default: tern, rustls and quinn frames), and prints
the growth between the two snapshots per connection, largest first.
"""
import re
import sys

SNAPSHOT = re.compile(r"^ +(\d+) +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+$")
NODE = re.compile(r"^([| ]*)->\s*[\d.]+% \(([\d,]+)B\) (.*)$")


def by_frame(lines, snapshot, pattern):
    starts, current = {}, None
    for i, line in enumerate(lines):
        m = SNAPSHOT.match(line)
        if m:
            current = int(m.group(1))
        if "(heap allocation functions)" in line:
            starts[current] = i
    if snapshot not in starts:
        sys.exit(f"snapshot {snapshot} is not a detailed one: {sorted(starts)}")
    totals, stack = {}, []
    for line in lines[starts[snapshot] + 1:]:
        if not line.strip() or line.startswith("-----"):
            break
        m = NODE.match(line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        frame = re.sub(r"0x[0-9A-F]+: ", "", m.group(3))
        stack = stack[:depth] + [frame]
        # Count a node once: at its innermost (closest to the allocation) matching frame.
        if pattern.search(frame) and not any(pattern.search(f) for f in stack[:-1]):
            key = frame[:150]
            totals[key] = totals.get(key, 0) + int(m.group(2).replace(",", ""))
    return totals


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    lines = open(sys.argv[1]).read().split("\n")
    before, peak, conns = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    pattern = re.compile(
        sys.argv[5] if len(sys.argv) > 5 else r"tern_server::|rustls::|quinn::|quinn_proto::"
    )
    a, b = by_frame(lines, before, pattern), by_frame(lines, peak, pattern)
    rows = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), reverse=True)
    total = sum(d for d, _ in rows)
    print(f"growth {total} B, {total / conns:.1f} B per connection")
    for d, k in rows[:25]:
        print(f"{d / conns:8.1f} B/conn  {k}")


if __name__ == "__main__":
    main()
