#!/usr/bin/env bash
# Breaks one saga rule at a time (crates/sim/mutations/*.patch), runs the
# simulation's default 2,000 schedules against it, and requires the
# simulation to find the break; the rule is restored after each, also on
# Ctrl-C. Prints each mutation's shrunk schedule. `make sim-mutations`.
set -euo pipefail
cd "$(dirname "$0")/.."

patches=(crates/sim/mutations/*.patch)
applied=""
restore() {
    if [ -n "$applied" ]; then
        git apply -R "$applied" || true
        applied=""
    fi
}
trap restore EXIT INT TERM

if ! git diff --quiet -- services; then
    echo "services/ has uncommitted changes; commit or stash them first" >&2
    exit 2
fi

survived=0
for patch in "${patches[@]}"; do
    name=$(basename "$patch" .patch)
    echo "== $name"
    git apply "$patch"
    applied="$patch"
    log=$(mktemp)
    if cargo test -q -p choreo-sim --test simulation every_invariant_holds -- --nocapture >"$log" 2>&1; then
        echo "   SURVIVED: the simulation found nothing"
        survived=$((survived + 1))
    elif grep -q "^FAILED schedule" "$log"; then
        sed -n '/^FAILED schedule/,/^replay:/p' "$log" | sed 's/^/   /'
    else
        echo "   the test failed without a simulation verdict:"
        tail -30 "$log" | sed 's/^/   /'
        survived=$((survived + 1))
    fi
    rm -f "$log"
    restore
done
echo "${#patches[@]} mutations, $survived not found by the simulation"
[ "$survived" -eq 0 ]
