"""Benchmarks for alembic-herd, side by side with plain Alembic and yoyo-migrations.

``make bench`` (or ``python -m bench``) runs every measurement in one run and writes
``bench/results/latest.json``, the tables of ``docs/benchmarks.md`` (its sentences are
written by hand) and a chart under ``docs/img/``. ``python -m bench --quick`` is a short
smoke run. What is measured and how is described in the report itself.

Modules: :mod:`bench.run` (the command line and the plan), :mod:`bench.release` (N forked
replicas released at once, each doing :func:`alembic_herd.demo.replica.act`),
:mod:`bench.backends` (the databases; PostgreSQL from :mod:`alembic_herd._embedded`),
:mod:`bench.projects` (the migration sets; ``bench/project`` is the four-revision Alembic
project), :mod:`bench.sections` (the measurements), :mod:`bench.report` (the tables),
:mod:`bench.chart` (the PNG), :mod:`bench.machine`, :mod:`bench.stats`. Run apart:
:mod:`bench.wake64` (section 2's in-process wake-up alone, with where each waiter's time
goes), :mod:`bench.wakeup` (whole processes), :mod:`bench.herd1000`.
"""
