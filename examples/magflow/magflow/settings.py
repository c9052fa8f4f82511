"""Settings from the environment (twelve-factor): one place that reads os.environ.

=========================  ===============================================================
DATABASE_URL               postgresql+psycopg://user:password@host:5432/db (required)
CELERY_BROKER_URL          the broker; default REDIS_URL, default redis://redis:6379/0
CELERY_BROKER_FOLDER       the folder of the ``filesystem://`` broker (local runs only)
MAGFLOW_QUEUE              the Celery queue (default ``magflow``)
MAGFLOW_BEAT_INTERVAL      seconds between the beat's heartbeat tasks (default 30)
MAGFLOW_HERD_STARTUP       ``wait`` (default), ``auto`` or ``off``: what the app and the
                           worker/beat do at start-up besides ``herd run`` (see api.py)
HERD_TIMEOUT               how long that start-up waits for the schema (default 10m)
HERD_EXPAND_ONLY           ``true``: the rolling-deploy step (k8s/app.yaml): migrate and
                           wait only up to the first contract revision, and count the
                           rest as left for the contract Job, not pending (default false)
HERD_ALLOW_AHEAD           ``true``: a database at revisions this code does not know counts
                           as current and ready, contract revisions included - the override;
                           without it herd's revision graph decides (default false)
ALEMBIC_CONFIG             the alembic.ini (default: the one beside this package)
=========================  ===============================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Startup = Literal["wait", "auto", "off"]
DEFAULT_ALEMBIC_CONFIG = str(Path(__file__).resolve().parent.parent / "alembic.ini")


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (as platforms hand them out) use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _startup(value: str) -> Startup:
    match value:
        case "wait" | "auto" | "off":
            return value
    raise RuntimeError(f"MAGFLOW_HERD_STARTUP must be wait, auto or off, not {value!r}")


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    broker_url: str
    broker_folder: str | None = None
    queue: str = "magflow"
    beat_interval: float = 30.0
    herd_startup: Startup = "wait"
    herd_timeout: str = "10m"
    allow_ahead: bool = False
    expand_only: bool = False
    alembic_config: str = DEFAULT_ALEMBIC_CONFIG

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw_db = env.get("DATABASE_URL")
        return cls(
            database_url=normalize_database_url(raw_db) if raw_db else None,
            broker_url=env.get("CELERY_BROKER_URL")
            or env.get("REDIS_URL", "redis://redis:6379/0"),
            broker_folder=env.get("CELERY_BROKER_FOLDER") or None,
            queue=env.get("MAGFLOW_QUEUE", "magflow"),
            beat_interval=float(env.get("MAGFLOW_BEAT_INTERVAL", "30")),
            herd_startup=_startup(env.get("MAGFLOW_HERD_STARTUP", "wait")),
            herd_timeout=env.get("HERD_TIMEOUT", "10m"),
            allow_ahead=_flag(env.get("HERD_ALLOW_AHEAD", "")),
            expand_only=_flag(env.get("HERD_EXPAND_ONLY", "")),
            alembic_config=env.get("ALEMBIC_CONFIG", DEFAULT_ALEMBIC_CONFIG),
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set; set it to postgresql+psycopg://user:password@host:"
                "5432/database")
        return self.database_url
