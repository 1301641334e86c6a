# choreo — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS_DIR ?= $(or $(CHOREO_TOOLS_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/choreo/tools)
export CHOREO_TOOLS_DIR := $(TOOLS_DIR)

.PHONY: simulate sim-mutations help tools build run test lint fmt bench profile mutants clean-data

help:
	@echo "make run    — build and start the whole local stack (Apache Kafka, registry, five services)"
	@echo "make test   — unit tests, then end-to-end tests against Apache Kafka and the registry"
	@echo "make tools  — install Kafka's jars into $(TOOLS_DIR), and a JRE, Maven, PostgreSQL's binaries, kcat (done by run/test)"
	@echo "make clean-data — delete ./data (every event, schema and service database of make run)"
	@echo "make bench  — saga throughput and latency on a fresh local stack (release build)"
	@echo "make profile — the bench under perf: CPU per process, library and function (./profile)"
	@echo "make lint   — rustfmt and clippy, warnings as errors"
	@echo "make mutants — mutation testing of the checker, the apply step and the domains (cargo-mutants)"
	@echo "make simulate — the saga simulation at length: 100,000 seeded schedules (CHOREO_SIM_SCHEDULES, CHOREO_SIM_SEED)"
	@echo "make sim-mutations — break four saga rules one at a time and show the simulation finds each"
	@echo "make up / make down / make logs — the docker compose stack (deploy/)"

tools:
	@scripts/tools.sh

build:
	cargo build --release --workspace --bins

run: tools build
	target/release/choreo up

# The end-to-end tests start the service binaries as child processes, so the
# binaries are built first.
test: tools
	cargo build --workspace --bins
	cargo test --workspace --no-fail-fast

mutants:
	scripts/mutants.sh

# No broker needed: the simulation runs the services' code in one process.
simulate:
	cargo run --release -q -p choreo-sim --example simulate

sim-mutations:
	scripts/sim-mutations.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: tools build
	target/release/choreo bench --concurrency 512 --duration 20s --json-out bench.json

# The bench under a system-wide `perf record`: CPU per process, library and
# function in ./profile (scripts/profile.sh).
profile: tools build
	scripts/profile.sh profile

clean-data:
	rm -rf data

# Docker Compose: real Apache Kafka, Confluent Schema Registry, PostgreSQL,
# Mailpit and kcat (deploy/docker-compose.yml). Needs a Docker engine with
# the compose plugin; COMPOSE overrides the command (e.g. COMPOSE=docker-compose).
COMPOSE ?= docker compose
COMPOSE_FILE_ARGS := -f deploy/docker-compose.yml
.PHONY: up down logs

# Returns once every container has started in dependency order (the
# services after kafka/registry/postgres are healthy and init has exited 0);
# `ps` then shows each service's health.
# The services' admin token: $CHOREO_ADMIN_TOKEN, else data/admin-token
# (the same file `make run` keeps its token in; made here when missing).
COMPOSE_ENV = CHOREO_ADMIN_TOKEN="$${CHOREO_ADMIN_TOKEN:-$$(cat data/admin-token)}"

data/admin-token:
	@mkdir -p data
	@(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > $@; echo >> $@)

up: data/admin-token
	$(COMPOSE_ENV) $(COMPOSE) $(COMPOSE_FILE_ARGS) up -d --build
	$(COMPOSE_ENV) $(COMPOSE) $(COMPOSE_FILE_ARGS) ps
	@echo "admin token (PUT /stock, PUT /accounts): in data/admin-token"

down: data/admin-token
	$(COMPOSE_ENV) $(COMPOSE) $(COMPOSE_FILE_ARGS) --profile ui down -v --remove-orphans

logs: data/admin-token
	$(COMPOSE_ENV) $(COMPOSE) $(COMPOSE_FILE_ARGS) logs -f --tail=200
