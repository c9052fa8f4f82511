"""MagFlow: the service of the incident (FastAPI app, Celery worker and beat, PostgreSQL,
Redis), run as the reference deployment of alembic-herd."""

__version__ = "1.0.0"
