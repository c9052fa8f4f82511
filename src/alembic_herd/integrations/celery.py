"""Celery: worker and beat wait until the schema is current before they start.

::

    from celery import Celery
    from alembic_herd.integrations import celery as herd_celery

    app = Celery("magflow", broker=BROKER_URL)
    herd_celery.install(app, "alembic.ini", url=DATABASE_URL, timeout="10m")

``install`` connects Celery's ``worker_init`` and ``beat_init`` signals to
:func:`alembic_herd.wait_until_current`. Workers and beat **never migrate**: they wait for
the replica that does (a web replica running ``herd run``), then start. When the wait fails
(timeout, the leader's migration failed, the database is ahead of this code, bad
configuration) the start-up is aborted: herd's one-line message is logged and the process
exits with herd's exit code (``SystemExit``, which Celery's signal dispatch does not
swallow) instead of consuming tasks against the wrong schema.

Needs ``pip install 'alembic-herd[celery]'``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import URL

from .. import wait_until_current
from .._database import mask_text
from ..errors import HerdError

__all__ = ["install"]

log = logging.getLogger("alembic_herd.celery")

_SIGNALS = {"worker": "worker_init", "beat": "beat_init"}


def install(
    app: Any,
    config: Config | str | os.PathLike[str],
    *,
    url: str | URL | None = None,
    target: str = "head",
    timeout: float | timedelta | str = 600.0,
    allow_ahead: bool = False,
    worker: bool = True,
    beat: bool = True,
    **options: Any,
) -> dict[str, Callable[..., None]]:
    """Make ``app``'s worker and beat wait until the schema is current before starting.

    ``options`` go to :func:`alembic_herd.wait_until_current` (``version_table``,
    ``poll_interval``, ``lock_url``, ...). Returns the connected handlers by role
    (``{"worker": ..., "beat": ...}``); calling one runs the same wait. Installing twice on
    the same app replaces the earlier handlers.
    """
    from celery import signals

    handlers: dict[str, Callable[..., None]] = {}
    for role, enabled in (("worker", worker), ("beat", beat)):
        if not enabled:
            continue
        handler = _handler(app, role, config, url=url, target=target, timeout=timeout,
                           allow_ahead=allow_ahead, **options)
        signal = getattr(signals, _SIGNALS[role])
        signal.connect(handler, weak=False, dispatch_uid=f"alembic_herd:{role}:{id(app)}")
        handlers[role] = handler
    return handlers


def _handler(app: Any, role: str, config: Config | str | os.PathLike[str], **kwargs: Any,
             ) -> Callable[..., None]:
    def wait_for_schema(sender: Any = None, **_: Any) -> None:
        owner = getattr(sender, "app", None)
        if owner is not None and owner is not app:  # another Celery app in this process
            return
        _say(logging.INFO, f"alembic-herd: waiting for the database schema to be current "
                           f"before starting the {role} (this {role} never migrates)")
        try:
            outcome = wait_until_current(config, **kwargs)
        except HerdError as exc:
            _say(logging.CRITICAL,
                 f"alembic-herd: {mask_text(str(exc))}; not starting the {role}")
            raise SystemExit(exc.exit_code) from exc
        _say(logging.INFO, f"alembic-herd: {mask_text(outcome.describe())}; "
                           f"starting the {role}")

    wait_for_schema.__name__ = f"wait_for_schema_{role}"
    return wait_for_schema


def _say(level: int, message: str) -> None:
    """Log ``message``; print it to stderr when nothing would show it.

    ``worker_init`` fires before the worker sets up logging, so a log record would be lost
    (or, for INFO, dropped by Python's last-resort handler).
    """
    if log.isEnabledFor(level) and _has_handlers(log):
        log.log(level, message)
        return
    print(message, file=sys.stderr, flush=True)


def _has_handlers(logger: logging.Logger) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False
