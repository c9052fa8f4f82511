"""herd's log: one logger, and structured fields that formatters (text, JSON) can use."""

from __future__ import annotations

import logging
import os
from typing import Any

from ._database import HOST

log = logging.getLogger("alembic_herd")

def replica() -> str:
    """This process, as every log line names it: ``host:pid`` (read at each call, so a
    process forked after importing herd names itself)."""
    return f"{HOST}:{os.getpid()}"


def event(event: str, msg: str, *args: Any, level: int = logging.INFO, **fields: Any) -> None:
    """One log line; ``herd_event`` and the fields ride along for structured formatters."""
    log.log(level, msg, *args, extra={"herd_event": event, "herd": fields, "replica": replica()})
