#!/usr/bin/env bash
# Mutation testing of the code the tests must be able to judge: the
# reconciler's verdict and mail reading, the runtime's apply step, and the
# five services' pure domains, each against its crate's unit tests (fast:
# a few seconds per mutant once the first build is done).
#
#   make mutants                     # everything below
#   scripts/mutants.sh cli order     # some of it
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

# name | package | files
TARGETS=(
  "cli|choreo-cli|crates/cli/src/reconcile/judge.rs crates/cli/src/reconcile/mail.rs"
  "bus|choreo-bus|crates/bus/src/apply.rs"
  "order|choreo-order|services/order/src/domain.rs"
  "inventory|choreo-inventory|services/inventory/src/domain.rs"
  "payment|choreo-payment|services/payment/src/domain.rs"
  "courier|choreo-courier|services/courier/src/domain.rs"
  "communication|choreo-communication|services/communication/src/domain.rs"
)

wanted=("$@")
summary=()
for target in "${TARGETS[@]}"; do
  IFS='|' read -r name package files <<<"$target"
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  args=()
  for f in $files; do args+=(-f "$f"); done
  out="target/mutants/$name"
  mkdir -p "$out"
  echo "[mutants] $name: $package ${files}" >&2
  # Exit 2 means some mutants survived: reported, not fatal.
  cargo mutants -p "$package" "${args[@]}" -o "$out" --timeout 120 -- --lib | tee "$out.log" || true
  summary+=("$name: $(grep -h 'mutants tested' "$out.log" | tail -1)")
done
printf '%s\n' "${summary[@]}"
