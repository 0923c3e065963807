# relaygate — see README.md. `make dev` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

VENV_MIN := .venv-min
MIN_STAMP := $(VENV_MIN)/.installed
# The lock files: `make lock` rewrites them from pyproject.toml (see README "Dependencies").
LOCK_FLAGS := --universal --python-version 3.11 --custom-compile-command 'make lock' -q

.PHONY: image dev test screenshots test-unit test-integration test-min lock lint typecheck services bench bench-locust bench-flusher bench-peers soak fuzz clean

# The dev tools at the versions of requirements-dev.lock (constraints: pyproject still decides
# what is installed, the lock only which version).
$(STAMP): pyproject.toml requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements-dev.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Start (or reuse) Redis and PostgreSQL, migrate, seed a demo, serve relay + flusher + mock upstream.
dev: $(STAMP)
	$(BIN)/relaygate dev

## The container image (needs a Docker daemon; see docs/deploy.md).
image:
	docker build -f deploy/Dockerfile -t relaygate:$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml) .

## The whole suite: unit (fakeredis) + integration/e2e (real Redis and PostgreSQL; started if absent).
test: $(STAMP)
	$(BIN)/python -m tests.services -- $(BIN)/python -m pytest -q

## Unit + integration suites with every runtime dependency at its pyproject floor (own venv).
$(MIN_STAMP): pyproject.toml tools/min_constraints.py
	@test -x $(VENV_MIN)/bin/python || $(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) tools/min_constraints.py > $(VENV_MIN)/constraints-min.txt
	$(VENV_MIN)/bin/python -m pip install -q -c $(VENV_MIN)/constraints-min.txt -e '.[dev]'
	$(VENV_MIN)/bin/python -m pip check
	@touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(VENV_MIN)/bin/python -m pip list 2>/dev/null | grep -iE '^(aiohttp|yarl|uvloop|redis|hiredis|asyncpg|orjson|prometheus.client) '
	$(VENV_MIN)/bin/python -m tests.services -- $(VENV_MIN)/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration

## Rewrite requirements.lock (runtime, hashed: the Docker image) and requirements-dev.lock.
lock: $(STAMP)
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) --generate-hashes -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) --extra dev -o requirements-dev.lock

## The console's pages, light and dark x desktop and phone width, as PNGs (SCREENSHOTS=folder).
SCREENSHOTS ?= screenshots
screenshots: $(STAMP)
	RELAYGATE_SCREENSHOTS=$(abspath $(SCREENSHOTS)) $(BIN)/python -m tests.services -- $(BIN)/python -m pytest -q -p no:cacheprovider tests/browser
	@echo "screenshots in $(SCREENSHOTS)/"

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy
	$(BIN)/mypy --strict tools

services: $(STAMP)
	$(BIN)/python -m tests.services -- true

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py
	$(BIN)/python bench/translate_bench.py

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
	@# Drops only the database and Redis keys `make dev` created, stops its own servers.
	-test -x $(BIN)/python && $(BIN)/python -m relaygate.dev.clean
	rm -rf $(VENV) $(VENV_MIN) .relaygate
