"""Benchmarks for alembic-herd, side by side with plain Alembic and yoyo-migrations.

``make bench`` (or ``python -m bench``) runs every measurement in one run and writes
``bench/results/latest.json`` and the readable report ``docs/benchmarks.md`` (with a chart
under ``docs/img/``). ``python -m bench --quick`` is a short smoke run. What is measured and
how is described in the report itself.

Modules: :mod:`bench.run` (the command line and the plan), :mod:`bench.release` (N real
processes released at once), :mod:`bench.backends` (the databases), :mod:`bench.projects`
(the migration sets; ``bench/project`` is the four-revision Alembic project),
:mod:`bench.sections` (the measurements), :mod:`bench.report` (the Markdown report),
:mod:`bench.chart` (the PNG), :mod:`bench.findings` (rules over the figures),
:mod:`bench.machine`, :mod:`bench.stats`.
"""
