"""What a call did (:class:`Outcome`) and what the database looks like (:class:`Status`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import Holder

if TYPE_CHECKING:
    from ._history import Attempt

Action = Literal["migrated", "waited", "current", "downgraded"]


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
    """Revisions in the database this code does not know: all expand (``ahead_expand``),
    or whatever they are, with ``allow_ahead``."""
    ahead_expand: bool = False
    """The database is ahead of this code by expand revisions only, so this code may run."""
    left: tuple[str, ...] = ()
    """With ``expand_only``: the revisions from the first contract one on, not applied."""

    def describe(self) -> str:
        if self.action == "downgraded":
            return (f"downgraded {len(self.revisions)} revision(s) ({', '.join(self.revisions)}) "
                    f"to {', '.join(self.heads) or 'base'} in {self.migrate_seconds:.2f} s")
        if self.action == "migrated" and self.left:
            return (f"applied {len(self.revisions)} expand revision(s) to "
                    f"{', '.join(self.heads)} in {self.migrate_seconds:.2f} s; {self._left()}")
        if self.action == "migrated":
            return (f"migrated {len(self.revisions)} revision(s) to {', '.join(self.heads)} "
                    f"in {self.migrate_seconds:.2f} s")
        if self.action == "waited":
            who = self.leader.describe() if self.leader else "another replica"
            return (f"waited {self.waited_seconds:.2f} s for {who}; database at "
                    f"{', '.join(self.heads)}" + (f"; {self._left()}" if self.left else ""))
        if self.left:
            at = ", ".join(self.heads) or "base"
            return f"no expand revision to apply, database at {at}; {self._left()}"
        if self.ahead_expand:
            return (f"database is ahead by {', '.join(self.ahead)} (all expand); this release "
                    "can run on it")
        if self.ahead:
            return (f"database is ahead of this code at {', '.join(self.heads)} "
                    f"(unknown: {', '.join(self.ahead)}); allowed")
        return f"database already current at {', '.join(self.heads) or 'base'}"

    def _left(self) -> str:
        return (f"{len(self.left)} revision(s) left from contract revision {self.left[0]} on: "
                f"{', '.join(self.left)} - deploy them after the old release is gone")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["leader"] = _holder_dict(self.leader)
        data["ahead"] = list(self.ahead)
        data["left"] = list(self.left)
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
    ahead_expand: bool = False
    retrying: str | None = None
    """'leader retrying: attempt k of n, blocked by ...' while the lock's holder retries a
    revision whose lock wait timed out."""
    left: tuple[str, ...] = ()
    """With ``expand_only``: the revisions from the first contract one on, held back."""

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
            "ahead_expand": self.ahead_expand,
            "retrying": self.retrying,
            "left": list(self.left),
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
