"""Durations: seconds as numbers, ``timedelta``, or strings with explicit units."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from .errors import ConfigurationError

Duration = float | int | timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def to_seconds(value: Duration | str, *, name: str = "duration") -> float:
    """Return ``value`` in seconds.

    Accepts a number of seconds, a ``timedelta``, or a string with explicit units such as
    ``"90s"``, ``"5m"``, ``"1h30m"`` or ``"250ms"``. A bare number in a string is refused:
    a unit-less timeout is how Airflow's 1800 became 1.8 seconds.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ConfigurationError(f"{name} {value!r} is not a duration; give seconds or e.g. '90s'")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse(value.strip().lower(), name)
    else:
        raise ConfigurationError(
            f"{name} {value!r} is not a duration; give seconds, a timedelta or e.g. '90s'"
        )
    if not seconds >= 0:  # negative or NaN
        raise ConfigurationError(
            f"{name} {value!r} is negative; give a duration like '90s' or '5m'")
    return seconds


def _parse(text: str, name: str) -> float:
    if not text:
        raise ConfigurationError(f"{name} is empty; give a duration with units like '90s' or '5m'")
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            hint = " (add a unit: s, m, h or ms)" if re.fullmatch(r"[\d.]+", text) else ""
            raise ConfigurationError(
                f"{name} {text!r} is not a duration{hint}; expected e.g. '90s', '5m', '1h30m'"
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def format_seconds(seconds: float) -> str:
    """A short human rendering: ``0.42 s``, ``12.3 s``, ``5 min 3 s``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def spell(seconds: float) -> str:
    """A default as a user types it, e.g. ``600.0`` -> ``10m``, ``30.0`` -> ``30s`` (what
    :func:`to_seconds` reads back)."""
    whole = round(seconds)
    if whole != seconds or whole == 0:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


class Deadline:
    """One deadline, computed once from ``time.monotonic()``."""

    def __init__(self, seconds: float, *, start: float | None = None) -> None:
        self.seconds = seconds
        self.start = time.monotonic() if start is None else start
        self.at = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def extend(self, seconds: float) -> None:
        """Move the deadline ``seconds`` later (time that must not count against it)."""
        self.at += max(0.0, seconds)
