# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates .venv and installs what it needs; nothing else is required.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: help venv demo demo-stack test lint typecheck unit herd bench faults lockwait clean

help:
	@echo "make demo   - start an embedded PostgreSQL and a herd of 8 replicas on it"
	@echo "make demo-stack - the MagFlow stack (3 app replicas, worker, beat) as local processes"
	@echo "make test   - lint, type-check and run every test (real databases)"
	@echo "make bench  - benchmarks vs plain Alembic and yoyo -> docs/benchmarks.md (~10 min)"
	@echo "make faults - fault injection, every scenario at full trials -> docs/faults.md (~90 min)"
	@echo "make lockwait - an ALTER under live traffic, herd's lock waits vs none -> docs/faults.md (~2 min)"
	@echo "make clean  - remove the virtual environment and caches"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/herd demo

demo-stack: $(STAMP)
	cd examples/magflow && ../../$(BIN)/python run_local.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# everything in one run: bench/results/latest.json and docs/benchmarks.md (+ docs/img/);
# BENCH_ARGS=--quick for a short smoke run
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# the fault-injection suite at full trials: the leader faulted inside a revision (SIGKILL,
# SIGTERM, SIGINT, SIGSTOP past the lease and the keepalives, mixed lock kinds, a wrapped
# command; 20 trials each on PostgreSQL and MariaDB, and their controls), restarts,
# partitions, PgBouncer, 200 replicas, a plain alembic runner: tests/faults/results/*.json
# and docs/faults.md (make test runs one trial of each leader fault class)
faults: $(STAMP)
	rm -f tests/faults/results/*.json
	HERD_FAULTS_RESULTS=tests/faults/results $(BIN)/pytest tests/faults -m faults; \
	status=$$?; $(BIN)/python tests/faults/report.py tests/faults/results docs/faults.md; \
	exit $$status

# an application querying every 20 ms, a transaction blocking the table for 15 s, a migration
# altering it: with herd's lock-wait policy and without (the control), on PostgreSQL and
# MariaDB -> its own section of docs/faults.md (tests/lockwait_trial.py)
lockwait: $(STAMP)
	$(BIN)/python tests/lockwait_trial.py --blocker 15 --write docs/faults.md \
	  "$${HERD_TEST_POSTGRES_URL:?set HERD_TEST_POSTGRES_URL to a PostgreSQL server}" \
	  "$${HERD_TEST_MYSQL_URL:?set HERD_TEST_MYSQL_URL to a MariaDB or MySQL server}"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
