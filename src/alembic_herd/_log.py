"""herd's log: one logger, and structured fields that formatters (text, JSON) can use."""

from __future__ import annotations

import logging
from typing import Any

from ._database import HOST, PID

log = logging.getLogger("alembic_herd")

REPLICA = f"{HOST}:{PID}"
"""This process, as every log line names it: ``host:pid``."""


def event(event: str, msg: str, *args: Any, level: int = logging.INFO, **fields: Any) -> None:
    """One log line; ``herd_event`` and the fields ride along for structured formatters."""
    log.log(level, msg, *args, extra={"herd_event": event, "herd": fields, "replica": REPLICA})
