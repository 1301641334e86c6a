#!/usr/bin/env bash
# Mutation testing of the code the tests must be able to judge: the
# reconciler's verdict and mail reading, the runtime's apply step, and the
# five services' pure domains, each against its crate's unit tests (fast:
# a few seconds per mutant once the first build is done); and the outbox
# relay against its tests on a real broker (`relay`: about two minutes a
# mutant, so not in the default set).
#
#   make mutants                     # everything but the relay
#   scripts/mutants.sh cli order     # some of it
#   scripts/mutants.sh relay         # the relay against real Kafka
#
# cargo-mutants (crates.io) is installed once into the tools cache. Each
# run's full output is in target/mutants/<name>/mutants.out (missed.txt
# lists the survivors); the summary line of each is printed at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS_DIR="${CHOREO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo/tools}"
MUTANTS_VERSION=27.1.0
BIN="$TOOLS_DIR/cargo-mutants-$MUTANTS_VERSION/bin"
if [ ! -x "$BIN/cargo-mutants" ]; then
  echo "[mutants] installing cargo-mutants $MUTANTS_VERSION into $BIN" >&2
  cargo install --locked --quiet --root "$BIN/.." cargo-mutants --version "$MUTANTS_VERSION"
fi
export PATH="$BIN:$PATH"
# cargo-mutants builds a copy of the tree; one build folder for all copies
# keeps the dependencies built once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/mutants-build}"

# name | package | files | cargo-mutants options | cargo test arguments
TARGETS=(
  "cli|choreo-cli|crates/cli/src/reconcile/judge.rs crates/cli/src/reconcile/mail.rs||--lib"
  "bus|choreo-bus|crates/bus/src/apply.rs||--lib"
  "order|choreo-order|services/order/src/domain.rs||--lib"
  "inventory|choreo-inventory|services/inventory/src/domain.rs||--lib"
  "payment|choreo-payment|services/payment/src/domain.rs||--lib"
  "courier|choreo-courier|services/courier/src/domain.rs||--lib"
  "communication|choreo-communication|services/communication/src/domain.rs||--lib"
)
# The relay's tests start Kafka and choreo-registry (a binary of this
# workspace), so they run in place on the workspace's own build: the
# registry binary is there, and only the crates above the relay rebuild.
# cargo-mutants runs its baseline with the mutated package's tests, not
# --test-package's, so the baseline is skipped: run those tests once on the
# unmutated tree first (`cargo test -p choreo-e2e` with the same arguments).
RELAY="relay|choreo-bus|crates/bus/src/relay.rs|--in-place --baseline skip --test-package choreo-e2e|--test relay --test hostile_runtime -- every_row relay_sets producer_limit"

wanted=("$@")
if [[ " ${wanted[*]} " =~ " relay " ]]; then
  TARGETS+=("$RELAY")
fi
summary=()
for target in "${TARGETS[@]}"; do
  IFS='|' read -r name package files options test_args <<<"$target"
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  args=()
  for f in $files; do args+=(-f "$f"); done
  out="target/mutants/$name"
  mkdir -p "$out"
  echo "[mutants] $name: $package ${files}" >&2
  if [[ "$options" == *--in-place* ]]; then
    if ! git diff --quiet -- "$files"; then
      echo "[mutants] $name mutates $files in place: commit or stash its changes first" >&2
      exit 1
    fi
    env -u CARGO_TARGET_DIR cargo build -q --bin choreo-registry
    # shellcheck disable=SC2086
    env -u CARGO_TARGET_DIR cargo test -q -p choreo-e2e $test_args ||
      { echo "[mutants] $name: the tests fail on the unmutated tree" >&2; exit 1; }
    env_target=(env -u CARGO_TARGET_DIR)
  else
    env_target=(env)
  fi
  # Exit 2 means some mutants survived: reported, not fatal.
  # shellcheck disable=SC2086
  "${env_target[@]}" cargo mutants -p "$package" "${args[@]}" $options -o "$out" --timeout 240 \
    -- $test_args | tee "$out.log" || true
  summary+=("$name: $(grep -h 'mutants tested' "$out.log" | tail -1)")
done
printf '%s\n' "${summary[@]}"
