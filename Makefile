# relaygate — see README.md. `make dev` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-unit test-integration lint typecheck services bench bench-locust bench-flusher bench-peers soak fuzz clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Start (or reuse) Redis and PostgreSQL, migrate, seed a demo, serve relay + flusher + mock upstream.
dev: $(STAMP)
	$(BIN)/relaygate dev

## The whole suite: unit (fakeredis) + integration/e2e (real Redis and PostgreSQL; started if absent).
test: $(STAMP)
	$(BIN)/python -m tests.services -- $(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

services: $(STAMP)
	$(BIN)/python -m tests.services -- true

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py

bench-locust: $(STAMP)
	$(BIN)/python bench/run_locust.py

bench-flusher: $(STAMP)
	$(BIN)/python bench/flusher_bench.py

bench-peers: $(STAMP)
	$(BIN)/python bench/peers.py

## The history checker for 10 minutes of faults (RELAYGATE_SOAK_SECONDS), then the old soak.
soak: $(STAMP)
	RELAYGATE_SOAK_SECONDS=$${RELAYGATE_SOAK_SECONDS:-600} $(BIN)/python -m tests.services -- $(BIN)/python -m pytest -q -s tests/e2e/test_checker.py -p no:cacheprovider
	$(BIN)/python -m tests.services -- $(BIN)/python -m pytest -q -m soak tests/soak -p no:cacheprovider

## Hostile-input fuzzing, longer than the bounded run inside make test.
fuzz: $(STAMP)
	RELAYGATE_FUZZ_EXAMPLES=$${RELAYGATE_FUZZ_EXAMPLES:-20000} $(BIN)/python -m tests.services -- $(BIN)/python -m pytest -q tests/fuzz tests/integration/test_relay_fuzz.py tests/integration/test_api_fuzz.py -p no:cacheprovider

clean:
	-$(BIN)/python -c 'import pathlib; from relaygate.dev.services import stop_local_services; stop_local_services(pathlib.Path(".relaygate"))' 2>/dev/null
	rm -rf $(VENV) .relaygate
