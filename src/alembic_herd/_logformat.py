"""herd's log lines on stderr, as text or one JSON object each, with passwords masked.

Text lines read ``HH:MM:SS herd[host:pid] message`` (``warning:`` / ``error:`` before
warnings and errors, ``[logger]`` before another library's records); JSON lines carry
``time``, ``level``, ``replica``, ``event`` and ``message`` plus the event's fields (see
:func:`alembic_herd._log.event`). Every line the command line prints, log or not, passes
through :func:`~._database.mask_text`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from ._database import HOST, mask_text

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


class _Formatter(logging.Formatter):
    def __init__(self, urls: tuple[str | None, ...], log_format: LogFormat) -> None:
        super().__init__()
        self.urls = urls
        self.log_format = log_format

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        replica = getattr(record, "replica", None) or f"{HOST}:{record.process}"
        line = (self._json(record, message, replica) if self.log_format == "json"
                else self._text(record, message, replica))
        return mask_text(line, *self.urls)

    @staticmethod
    def _json(record: logging.LogRecord, message: str, replica: str) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "replica": replica,
            "event": getattr(record, "herd_event", None),
            "message": message,
        }
        if not record.name.startswith("alembic_herd"):
            data["logger"] = record.name
        fields = getattr(record, "herd", None)
        if isinstance(fields, Mapping):
            data.update({k: v for k, v in fields.items() if k not in data})
        return json.dumps(data, default=str)

    @staticmethod
    def _text(record: logging.LogRecord, message: str, replica: str) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        if not record.name.startswith("alembic_herd"):
            prefix += f"[{record.name}] "
        return f"{stamp} herd[{replica}] {prefix}{message}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextmanager
def logging_to_stderr(*, urls: tuple[str | None, ...], verbose: int, quiet: bool,
                      log_format: LogFormat, quiet_by_default: bool = False) -> Iterator[None]:
    """Send herd's (and, with -v, Alembic's) log records to stderr for one command; the
    loggers' levels and handlers are restored afterwards."""
    handler = _Handler()
    handler.setFormatter(_Formatter(urls, log_format))
    herd_log, alembic_log = logging.getLogger("alembic_herd"), logging.getLogger("alembic")
    saved = [(lg, lg.level, lg.propagate) for lg in (herd_log, alembic_log)]
    if verbose:
        herd_level = logging.DEBUG
    elif quiet or quiet_by_default:
        herd_level = logging.ERROR
    else:
        herd_level = logging.INFO
    herd_log.setLevel(herd_level)
    alembic_log.setLevel(logging.INFO if verbose else logging.WARNING)
    for lg in (herd_log, alembic_log):
        lg.addHandler(handler)
        lg.propagate = False
    # quiet: Alembic's INFO lines go too, also those that env.py's fileConfig() sends to
    # handlers of its own (no logger level herd sets survives fileConfig). A command's
    # process is herd's alone, so switching INFO off process-wide is fine here.
    disabled = logging.root.manager.disable
    if herd_level > logging.INFO:
        logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(disabled)
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
