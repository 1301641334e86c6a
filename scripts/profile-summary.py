#!/usr/bin/env python3
"""Summarises a system-wide `perf record` of `choreo bench` per process.

Reads `perf script -F comm,pid,ip,sym,dso` on stdin and the bench's JSON report
(argv[1]), whose `processes` name every pid of the stack. Prints, for the
whole machine, where the CPU samples went (each process of the stack, other
processes, idle), then per process its threads, libraries and hottest
functions.
"""

import collections
import json
import re
import sys

TOP_LIBS = 6
TOP_SYMS = 12
LINE = re.compile(r"^\s*(.*?)\s+(\d+)\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")
TOP_THREADS = 6


def category(sym, dso):
    """A coarse label of what a sample was doing."""
    d = dso.rsplit("/", 1)[-1]
    s = sym.lower()
    if d == "[kernel.kallsyms]":
        return "kernel"
    if "sqlite" in s:
        return "sqlite"
    if d.startswith("librdkafka") or s.startswith("rd_") or "rdkafka" in s:
        return "librdkafka"
    if d.startswith("libc") or d.startswith("ld-linux") or d == "[vdso]":
        return "libc"
    if "avro" in s:
        return "avro"
    if "tokio" in s:
        return "tokio"
    if "sqlx" in s:
        return "sqlx"
    if "malloc" in s or "free" in s or "alloc" in s or "realloc" in s:
        return "allocator"
    if "tracing" in s or "metrics" in s:
        return "tracing/metrics"
    return "other"


def main():
    report = json.load(open(sys.argv[1]))
    names = {p["pid"]: p["name"] for p in report.get("processes", [])}
    total = 0
    per_proc = collections.Counter()
    libs = collections.defaultdict(collections.Counter)
    threads = collections.defaultdict(collections.Counter)
    syms = collections.defaultdict(collections.Counter)
    cats = collections.defaultdict(collections.Counter)
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        thread, pid, sym, dso = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        total += 1
        if pid == 0:
            who = "(idle)"
        else:
            who = names.get(pid, "(other processes)")
        per_proc[who] += 1
        if who.startswith("("):
            continue
        libs[who][dso.rsplit("/", 1)[-1]] += 1
        # Worker threads are numbered per process; keep the kind only.
        threads[who][re.sub(r"[-_:]?\d+$", "", thread)] += 1
        syms[who][sym if sym != "[unknown]" else f"[unknown] in {dso.rsplit('/', 1)[-1]}"] += 1
        cats[who][category(sym, dso)] += 1
    if total == 0:
        print("no samples")
        return
    sagas = report.get("sagas_per_second")
    print(f"{total} samples; {sagas} sagas/s in this run")
    print()
    print("share of all CPU samples (both cores; idle included)")
    for who, n in per_proc.most_common():
        print(f"  {100.0 * n / total:6.1f} %  {who}")
    for who, _ in per_proc.most_common():
        if who.startswith("("):
            continue
        n = per_proc[who]
        print()
        print(f"== {who}: {100.0 * n / total:.1f} % of all samples")
        print("  by kind: " + ", ".join(
            f"{k} {100.0 * c / n:.0f} %" for k, c in cats[who].most_common()))
        print("  threads:")
        for t, c in threads[who].most_common(TOP_THREADS):
            print(f"    {100.0 * c / n:5.1f} %  {t}")
        print("  libraries:")
        for lib, c in libs[who].most_common(TOP_LIBS):
            print(f"    {100.0 * c / n:5.1f} %  {lib}")
        print("  functions:")
        for sym, c in syms[who].most_common(TOP_SYMS):
            print(f"    {100.0 * c / n:5.1f} %  {sym[:110]}")


if __name__ == "__main__":
    main()
