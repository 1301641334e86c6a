#!/usr/bin/env bash
# CPU profile of the whole local stack under load: `choreo bench` (broker,
# registry and the five services on this machine) runs under a system-wide
# `perf record`, then scripts/profile-summary.py sums the samples up by the
# stack's processes (the bench report names their pids) into summary.txt:
# the share of the two cores each process took, and per process its
# threads, libraries and hottest functions. perf.data stays for
# `perf report -i OUT_DIR/perf.data`.
# Usage: scripts/profile.sh [OUT_DIR] [choreo bench arguments…]
#   default: profile/ and --concurrency 512 --duration 30s
# Needs Debian's linux-perf (installed here when missing) and a release
# build (make build).
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-profile}"
shift || true
args=("$@")
if [ "${#args[@]}" -eq 0 ]; then
  args=(--concurrency 512 --duration 30s)
fi

if ! command -v perf >/dev/null 2>&1; then
  echo "[profile] installing Debian's linux-perf" >&2
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq linux-perf >/dev/null
fi
if [ ! -x target/release/choreo ]; then
  echo "[profile] no release build: run 'make build' first" >&2
  exit 1
fi

mkdir -p "$out"
# cpu-clock is a software event: it works where hardware counters are not
# exposed (virtual machines). 499 Hz keeps the overhead near 1 %.
perf record -q -F 499 -a -e cpu-clock -o "$out/perf.data" -- \
  target/release/choreo bench "${args[@]}" --json-out "$out/bench.json" \
  | tee "$out/bench.txt"

perf script -i "$out/perf.data" -F comm,pid,ip,sym,dso 2>/dev/null \
  | python3 scripts/profile-summary.py "$out/bench.json" >"$out/summary.txt"
echo
sed -n '1,/^== /p' "$out/summary.txt" | sed '$d'
echo "[profile] per process threads, libraries and functions: $out/summary.txt"
