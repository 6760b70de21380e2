# twofold: `make run` serves the shop on the embedded store; `make test` checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APP    ?= shop
PYTEST_ARGS ?=

.PHONY: install run run-postgres run-cluster test fuzz lint typecheck clean bench bench-tracing bench-read-side token

CHROMIUM := /usr/bin/chromium
# apt-get needs root: sudo when we are not. A machine where it cannot run fails here, loudly,
# rather than leaving the console's browser tests to fail later.
APT_GET := $(if $(filter 0,$(shell id -u)),apt-get,sudo apt-get)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@# The console's browser tests drive Debian's chromium: Playwright's own download needs the internet.
	@test -x $(CHROMIUM) || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium; }
	@touch $(STAMP)

install: $(STAMP)

run: install  ## serve examples/$(APP) on http://127.0.0.1:$${PORT:-8000}, data in ./data
	$(BIN)/twofold serve examples.$(APP):$(APP)

run-postgres: install  ## the same, on a development PostgreSQL kept in ./data/postgres
	$(BIN)/twofold serve examples.$(APP):$(APP) --dev-postgres

run-cluster: install  ## every service part in its own process, on PostgreSQL (queries on its replica) and NATS; the gateway on $${PORT:-8000}
	$(BIN)/twofold cluster examples.$(APP):$(APP)

SCOPES ?= commands:* queries:*
SUB    ?= developer
token: install  ## a development token: make token SCOPES='queries:*' [SUB=ada] [TENANT=t1] (needs TWOFOLD_AUTH_HS256_SECRET)
	@$(BIN)/twofold token --scopes '$(SCOPES)' --sub '$(SUB)' $(if $(TENANT),--tenant '$(TENANT)')

lint: install
	$(BIN)/ruff check src tests examples benchmarks conftest.py
	$(BIN)/ruff format --check src tests examples benchmarks conftest.py

typecheck: install
	$(BIN)/mypy

JOBS ?= auto
test: lint typecheck  ## style, types, then the whole suite, its files spread over the cores (JOBS=1: one process)
	$(BIN)/pytest -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 500

fuzz: install  ## schemathesis against the APIs' OpenAPI documents, $(FUZZ_EXAMPLES) examples per operation (make test runs 10)
	TWOFOLD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -p no:cacheprovider

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,bench]"
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## twofold beside eventsourcing and the raw drivers, SQLite and PostgreSQL; QUICK=1 short (docs/performance.md)
	$(BIN)/python -m benchmarks.run $(if $(filter 1,$(QUICK)),--quick)

bench-tracing: install  ## what tracing costs a command: append_per_command with tracing off and on (docs/observability.md)
	$(BIN)/python -m benchmarks.tracing $(if $(filter 1,$(QUICK)),--quick)

EVENTS ?= 1000000
bench-read-side: install  ## each read-model target's catch-up and query latency over $(EVENTS) events (docs/read-side.md)
	$(BIN)/python -m benchmarks.read_targets --events $(EVENTS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
