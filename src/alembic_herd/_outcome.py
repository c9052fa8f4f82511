"""What a call did (:class:`Outcome`) and what the database looks like (:class:`Status`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ._history import Attempt
from .errors import Holder

Action = Literal["migrated", "waited", "current"]


@dataclass(frozen=True)
class Outcome:
    """What this process did.

    ``action`` is ``migrated`` (it led and applied ``revisions``), ``waited`` (another
    replica brought the database current while this one waited, for ``waited_seconds``,
    for ``leader``), or ``current`` (nothing was pending; no lock was taken).
    """

    action: Action
    heads: tuple[str, ...]
    revisions: tuple[str, ...] = ()
    elapsed: float = 0.0
    migrate_seconds: float = 0.0
    waited_seconds: float = 0.0
    leader: Holder | None = None
    lock: str | None = None
    replica: str = ""
    ahead: tuple[str, ...] = ()
    """Revisions in the database this code does not know (only with ``allow_ahead``)."""

    def describe(self) -> str:
        if self.action == "migrated":
            return (f"migrated {len(self.revisions)} revision(s) to {', '.join(self.heads)} "
                    f"in {self.migrate_seconds:.2f} s")
        if self.action == "waited":
            who = self.leader.describe() if self.leader else "another replica"
            return (f"waited {self.waited_seconds:.2f} s for {who}; database at "
                    f"{', '.join(self.heads)}")
        if self.ahead:
            return (f"database is ahead of this code at {', '.join(self.heads)} "
                    f"(unknown: {', '.join(self.ahead)}); allowed")
        return f"database already current at {', '.join(self.heads) or 'base'}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["leader"] = _holder_dict(self.leader)
        data["ahead"] = list(self.ahead)
        return data


@dataclass(frozen=True)
class Status:
    """The database against the scripts, and who holds the lock."""

    url: str
    version_table: str
    current_heads: tuple[str, ...]
    script_heads: tuple[str, ...]
    pending: tuple[str, ...]
    lock: str
    holder: Holder | None
    recent: tuple[Attempt, ...] = field(default=())
    ahead: tuple[str, ...] = ()
    retrying: str | None = None
    """'leader retrying: attempt k of n, blocked by ...' while the lock's holder retries a
    revision whose lock wait timed out."""

    @property
    def is_current(self) -> bool:
        return not self.pending

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "version_table": self.version_table,
            "current_heads": list(self.current_heads),
            "script_heads": list(self.script_heads),
            "pending": list(self.pending),
            "is_current": self.is_current,
            "lock": self.lock,
            "holder": _holder_dict(self.holder),
            "recent": [a.as_dict() for a in self.recent],
            "ahead": list(self.ahead),
            "retrying": self.retrying,
        }


def _holder_dict(holder: Holder | None) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "host": holder.host,
        "pid": holder.pid,
        "since": holder.since.isoformat() if holder.since else None,
        "detail": holder.detail,
    }
