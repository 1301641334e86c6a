#!/usr/bin/env bash
# CPU profile of the whole local stack under load: `choreo bench` (broker,
# registry and the five services on this machine) runs under a system-wide
# `perf record`, then perf's report is cut into three summaries:
#   by-process.txt   CPU samples per process (comm)
#   by-library.txt   per process, per binary or shared library (dso)
#   hot-symbols.txt  the hottest functions per process
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

report() { perf report -i "$out/perf.data" --stdio --no-children "$@" 2>/dev/null; }
report --sort comm >"$out/by-process.txt"
report --sort comm,dso --percent-limit 0.5 >"$out/by-library.txt"
report --sort comm,sym --percent-limit 0.3 >"$out/hot-symbols.txt"
echo
echo "[profile] CPU samples per process ($out/by-process.txt):"
grep -E '^ +[0-9]' "$out/by-process.txt" | head -15
echo "[profile] per library: $out/by-library.txt; hottest functions: $out/hot-symbols.txt"
