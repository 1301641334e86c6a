#!/usr/bin/env bash
# Installs what choreo needs outside Cargo, once per machine, into a cache
# outside the clone so a fresh clone (and CI) reuses it:
#   - tansu 0.6.0, the Kafka-API broker (a cold build takes 10-13 minutes);
#   - Debian's kcat and docker-compose;
#   - librdkafka 2.x taken from the confluent-kafka wheel, because Debian's
#     kcat links librdkafka 2.0.2, which cannot parse tansu's ApiVersions reply.
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail

TOOLS_DIR="${CHOREO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo/tools}"
TANSU_VERSION=0.6.0
TANSU_ROOT="$TOOLS_DIR/tansu-$TANSU_VERSION"
mkdir -p "$TOOLS_DIR"

say() { printf '[tools] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_debian_packages() {
  local missing=()
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v unzip >/dev/null 2>&1 || missing+=(unzip)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_tansu() {
  if [ -x "$TANSU_ROOT/bin/tansu" ]; then
    return
  fi
  say "building tansu $TANSU_VERSION into $TANSU_ROOT (first time only, about 10-13 minutes)"
  # A private target dir keeps the broker's build out of the workspace's.
  CARGO_TARGET_DIR="$TOOLS_DIR/.tansu-build" \
    cargo install --root "$TANSU_ROOT" tansu --version "$TANSU_VERSION" \
      --locked --features dynostore,libsql
  rm -rf "$TOOLS_DIR/.tansu-build"
}

install_librdkafka() {
  local dir="$TOOLS_DIR/librdkafka"
  if [ -e "$dir/librdkafka.so.1" ]; then
    return
  fi
  say "fetching librdkafka from the confluent-kafka wheel"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$tmp" confluent-kafka
  mkdir -p "$tmp/x" "$dir.new"
  unzip -q -o "$tmp"/confluent_kafka-*.whl 'confluent_kafka.libs/*' -d "$tmp/x"
  cp "$tmp"/x/confluent_kafka.libs/* "$dir.new/"
  # kcat asks the loader for librdkafka.so.1; the wheel renamed the file.
  ln -sf "$(basename "$(ls "$dir.new"/librdkafka-*.so.1 | head -n1)")" "$dir.new/librdkafka.so.1"
  rm -rf "$dir" && mv "$dir.new" "$dir"
}

install_debian_packages
install_librdkafka
install_tansu

printf 'tansu:   %s\n' "$TANSU_ROOT/bin/tansu"
printf 'kcat:    %s (wrapper scripts/kcat)\n' "$(command -v kcat)"
