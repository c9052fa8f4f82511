"""Integrations of alembic-herd with the frameworks a replica runs (optional extras).

* :mod:`alembic_herd.integrations.readiness` - a cheap readiness probe (one query per call)
  with plain WSGI and ASGI wrappers; needs nothing beyond the core.
* :mod:`alembic_herd.integrations.starlette` - Starlette routes, a FastAPI health router and
  a lifespan that waits (or migrates) at start-up; ``pip install 'alembic-herd[starlette]'``.
* :mod:`alembic_herd.integrations.celery` - worker and beat wait until the schema is current
  before they start; ``pip install 'alembic-herd[celery]'``.

The core package never imports these modules; import the one you need.
"""
