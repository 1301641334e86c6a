#!/usr/bin/env bash
# Installs what choreo needs outside Cargo, once per machine, into a cache
# outside the clone so a fresh clone (and CI) reuses it:
#   - a JRE and Maven (Debian's) when missing;
#   - Apache Kafka's jars, from Maven Central through deploy/kafka/pom.xml,
#     into $TOOLS_DIR/kafka-<version>/libs (Maven's own cache is ~/.m2);
#   - PostgreSQL's server binaries (Debian's), for the tests' throwaway
#     clusters: no cluster is created or started here;
#   - Debian's kcat, docker-compose and nginx (the binary only: nothing is
#     started; tests/tests/registry_guard.rs runs compose's registry guard);
#   - Debian's chromium and chromium-driver, for the monitor's browser
#     tests (tests/tests/ui.rs);
#   - Mailpit (compose's version), built with `go install` from the Go
#     module proxy into $TOOLS_DIR/mailpit-<version>;
#   - Apicurio Registry, from Maven Central;
#   - schemathesis (tests/schemathesis/requirements.txt), from PyPI into a
#     virtualenv $TOOLS_DIR/schemathesis-<version>.
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS_DIR="${CHOREO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/choreo/tools}"
# The one Kafka version of the project: the pom's, which the compose image
# and crates/stack use too (tests/tests/compose.rs checks all three agree).
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)"
KAFKA_LIBS="$TOOLS_DIR/kafka-$KAFKA_VERSION/libs"
mkdir -p "$TOOLS_DIR"

say() { printf '[tools] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

have_postgres() {
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  say "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_debian_packages() {
  local missing=()
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  if ! have_postgres; then
    # The binaries only: Debian's package would otherwise create and start
    # a "main" cluster, and no test may rely on a server that happens to run.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' |
      as_root tee /etc/postgresql-common/createcluster.d/choreo.conf >/dev/null
    missing+=(postgresql)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    # Packages with a daemon (nginx) must not start one: no service may be
    # left running that a test could come to rely on. policy-rc.d tells
    # invoke-rc.d to start nothing during this install.
    local policy=/usr/sbin/policy-rc.d placed=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
      as_root chmod 755 "$policy"
      placed=1
    fi
    apt_install "${missing[@]}"
    if [ -n "$placed" ]; then as_root rm -f "$policy"; fi
  fi
}

install_kafka() {
  if [ -e "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    return
  fi
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS"
  local tmp="$KAFKA_LIBS.new"
  rm -rf "$tmp"
  # Maven's output is shown only when it fails (on success it is a screen
  # of download lines and terminal escapes).
  local log="$TOOLS_DIR/kafka-$KAFKA_VERSION.mvn.log"
  if ! mvn -B -Dstyle.color=never -f deploy/kafka/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    cat "$log" >&2
    say "fetching Kafka's jars failed (log above, kept in $log)"
    exit 1
  fi
  # Maven writes its build folder beside the pom; nothing of it is needed.
  rm -rf deploy/kafka/target
  rm -rf "$KAFKA_LIBS" && mv "$tmp" "$KAFKA_LIBS"
}

# Mailpit, the SMTP catcher compose runs, built from the Go module proxy at
# the version of compose's image (tests/tests/mailpit.rs sends to it).
MAILPIT_VERSION="$(sed -n 's|.*image: axllent/mailpit:\(v[0-9.]*\).*|\1|p' deploy/docker-compose.yml)"
MAILPIT_DIR="$TOOLS_DIR/mailpit-$MAILPIT_VERSION"
install_mailpit() {
  if [ -x "$MAILPIT_DIR/mailpit" ]; then
    return
  fi
  command -v go >/dev/null 2>&1 || apt_install golang-go
  say "building Mailpit $MAILPIT_VERSION (go install, a few minutes once) into $MAILPIT_DIR"
  local log="$TOOLS_DIR/mailpit-$MAILPIT_VERSION.go.log"
  if ! GOBIN="$MAILPIT_DIR.new" GOFLAGS=-mod=mod \
    go install "github.com/axllent/mailpit@$MAILPIT_VERSION" >"$log" 2>&1; then
    cat "$log" >&2
    say "building Mailpit failed (log above, kept in $log)"
    exit 1
  fi
  rm -rf "$MAILPIT_DIR" && mv "$MAILPIT_DIR.new" "$MAILPIT_DIR"
}

# Apicurio Registry, a third-party Confluent-compatible registry the
# registry tests also run against (tests/tests/apicurio.rs): its Quarkus
# runner from Maven Central, unpacked into $TOOLS_DIR/apicurio-registry-<v>.
# The version is crates/stack/src/config.rs's APICURIO_VERSION.
APICURIO_VERSION="$(sed -n 's|^pub const APICURIO_VERSION: &str = "\(.*\)";|\1|p' crates/stack/src/config.rs)"
APICURIO_DIR="$TOOLS_DIR/apicurio-registry-$APICURIO_VERSION"
install_apicurio() {
  if [ -e "$APICURIO_DIR/apicurio-registry-app-$APICURIO_VERSION-runner.jar" ]; then
    return
  fi
  say "fetching Apicurio Registry $APICURIO_VERSION from Maven Central into $APICURIO_DIR"
  local tmp="$APICURIO_DIR.new"
  local log="$TOOLS_DIR/apicurio-$APICURIO_VERSION.mvn.log"
  rm -rf "$tmp" && mkdir -p "$tmp"
  if ! mvn -B -Dstyle.color=never dependency:copy \
    -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$tmp" >"$log" 2>&1; then
    cat "$log" >&2
    say "fetching Apicurio failed (log above, kept in $log)"
    exit 1
  fi
  tar -xzf "$tmp"/*.tar.gz -C "$tmp" && rm -f "$tmp"/*.tar.gz
  rm -rf "$APICURIO_DIR" && mv "$tmp" "$APICURIO_DIR"
}

# schemathesis, the OpenAPI fuzzer tests/tests/openapi.rs runs against
# every service's /openapi.json: the pinned version, in its own virtualenv.
SCHEMATHESIS_VERSION="$(sed -n 's|^schemathesis==\(.*\)$|\1|p' tests/schemathesis/requirements.txt)"
SCHEMATHESIS_DIR="$TOOLS_DIR/schemathesis-$SCHEMATHESIS_VERSION"
install_schemathesis() {
  # A virtualenv records its own path, so it is built in place; the stamp,
  # written last, marks it complete.
  if [ -e "$SCHEMATHESIS_DIR/.installed" ]; then
    return
  fi
  say "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $SCHEMATHESIS_DIR"
  local log="$TOOLS_DIR/schemathesis-$SCHEMATHESIS_VERSION.pip.log"
  rm -rf "$SCHEMATHESIS_DIR"
  if ! python3 -m venv "$SCHEMATHESIS_DIR" >"$log" 2>&1; then
    # Debian's python3 ships venv separately.
    apt_install python3-venv
    rm -rf "$SCHEMATHESIS_DIR" && python3 -m venv "$SCHEMATHESIS_DIR" >"$log" 2>&1
  fi
  if ! "$SCHEMATHESIS_DIR/bin/pip" install --quiet --disable-pip-version-check \
    -r tests/schemathesis/requirements.txt >>"$log" 2>&1; then
    cat "$log" >&2
    say "installing schemathesis failed (log above, kept in $log)"
    exit 1
  fi
  touch "$SCHEMATHESIS_DIR/.installed"
}

install_debian_packages
install_kafka
install_mailpit
install_apicurio
install_schemathesis

printf 'kafka:   %s (%s jars)\n' "$KAFKA_LIBS" "$(ls "$KAFKA_LIBS" | wc -l)"
printf 'java:    %s\n' "$(command -v java)"
printf 'kcat:    %s\n' "$(command -v kcat)"
printf 'nginx:   %s\n' /usr/sbin/nginx
printf 'chromium: %s (%s)\n' "$(command -v chromium)" "$(command -v chromedriver)"
printf 'mailpit: %s\n' "$MAILPIT_DIR/mailpit"
printf 'apicurio: %s\n' "$APICURIO_DIR"
printf 'schemathesis: %s\n' "$SCHEMATHESIS_DIR/bin/st"
