"""Errors raised by alembic-herd, in one hierarchy.

::

    HerdError                       base; ``exit_code`` is what ``herd`` exits with
    ├── ConfigurationError          bad input: alembic.ini, URL, duration, option   (exit 3)
    │   ├── UnsupportedDialectError no lock backend for this database               (exit 3)
    │   ├── RevisionNotFoundError   target or script problem (multiple heads, ...)  (exit 3)
    │   └── PrivilegeError          the database user lacks a privilege; names the GRANT (exit 14)
    ├── DatabaseUnavailableError    cannot connect / authenticate (after retries)   (exit 4)
    ├── DatabaseAheadError          database holds revisions this code lacks        (exit 5)
    ├── LockTimeoutError            lock not acquired before the deadline           (exit 6)
    ├── LockHeldError               'herd unlock' refused: the holder is alive      (exit 6)
    ├── WaitTimeoutError            schema not current before the deadline          (exit 7)
    ├── MigrationError              a migration raised while this process led       (exit 8)
    │   └── LockWaitError           its lock waits kept timing out; nothing applied (exit 8)
    ├── LeaderFailedError           another replica's migration failed              (exit 9)
    ├── IncompleteRevisionError     half-applied revision on non-transactional DDL  (exit 10)
    ├── LockLostError               the lock was lost while migrating (fencing)     (exit 11)
    └── CommandFailedError          a wrapped migration command exited non-zero     (exit 12)

Every message is one line: the object, what was expected or measured, and the next
step. Messages never contain a password (URLs are rendered with the password masked).

:data:`EXIT_CODES`, the table ``herd --help`` prints and docs/operators.md quotes, is built
from each class's ``exit_code`` and ``meaning`` plus :data:`NOT_ERRORS`, the codes no error
carries (success, 'not current', an internal error, an interruption).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

SUCCESS = 0
NOT_CURRENT = 1
INTERNAL_ERROR = 2
LINT_FINDINGS = 13
INTERRUPTED = 130
TERMINATED = 143

NOT_ERRORS: dict[int, str] = {
    SUCCESS: "success (for 'herd check': the database is current)",
    NOT_CURRENT: "'herd check' only: the database is reachable but not current",
    INTERNAL_ERROR: "unexpected internal error (run with --traceback and report it)",
    LINT_FINDINGS: "'herd lint' only: findings not acknowledged in the revision files",
    INTERRUPTED: "stopped by SIGINT (Ctrl-C): a revision in progress rolled back where the "
                 "database allows, the lock released",
    TERMINATED: "stopped by SIGTERM (a rollout, a scale-down): a revision in progress rolled "
                "back where the database allows, the lock released",
}
"""The exit codes that no :class:`HerdError` subclass carries."""


class HerdError(Exception):
    """Base class of every error alembic-herd raises on purpose.

    Each subclass says what ``herd`` exits with (``exit_code``) and what that code means in
    one line (``meaning``); :data:`EXIT_CODES` is built from them. A bare ``HerdError`` is
    herd's own bug and exits as an internal error.
    """

    exit_code: int = INTERNAL_ERROR
    meaning: ClassVar[str]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(HerdError):
    """The configuration or an argument is wrong; nothing was changed."""

    exit_code = 3
    meaning = "bad configuration or argument (alembic.ini, URL, duration, revision, dialect)"


class UnsupportedDialectError(ConfigurationError):
    """No lock backend is registered for the database's dialect."""


class RevisionNotFoundError(ConfigurationError):
    """The target revision cannot be resolved against the migration scripts."""


class PrivilegeError(ConfigurationError):
    """The database user may not do what this verb needs (read the version table, create or
    write herd's tables); the message names the ``GRANT`` to run. Nothing was changed,
    except where the message says otherwise."""

    exit_code = 14
    meaning = ("the database user lacks a privilege this verb needs (the message names the "
               "GRANT)")


class DatabaseUnavailableError(HerdError):
    """The database could not be reached or refused the credentials."""

    exit_code = 4
    meaning = "database unreachable or credentials refused"


class DatabaseAheadError(HerdError):
    """The database is at revisions that this code's migration scripts do not contain."""

    exit_code = 5
    meaning = "database is ahead of this code (unknown revisions in the version table)"

    def __init__(self, message: str, *, unknown: tuple[str, ...]) -> None:
        super().__init__(message)
        self.unknown = unknown


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) the migration lock, as far as the backend can tell."""

    host: str | None = None
    pid: int | None = None
    since: datetime | None = None
    detail: str | None = None

    def describe(self) -> str:
        parts = []
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.host:
            parts.append(f"on host {self.host}")
        if self.since is not None:
            parts.append(f"since {self.since.isoformat(timespec='seconds')}")
        if self.detail and not parts:
            parts.append(self.detail)
        return " ".join(parts) if parts else "an unknown holder"

    @staticmethod
    def tag(pid: int, since: str, host: str) -> str:
        """``herd <pid> <since> <host>``: the ``application_name`` a herd session holding a
        PostgreSQL lock advertises (``since``: ``%Y-%m-%dT%H:%M:%SZ``; at most 63 bytes)."""
        return f"herd {pid} {since} {host}"[:63]

    @classmethod
    def from_application_name(cls, name: str | None, backend_pid: int,
                              client: str | None) -> Holder:
        """Read back :meth:`tag`; other sessions are described as they are."""
        parts = (name or "").split(" ", 3)
        if len(parts) == 4 and parts[0] == "herd" and parts[1].isdigit():
            try:
                since = datetime.strptime(parts[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError:
                since = None
            return cls(host=parts[3], pid=int(parts[1]), since=since)
        return cls(detail=f"server backend {backend_pid} ({name or 'no application_name'}"
                   f"{', from ' + client if client else ''})")


class LockTimeoutError(HerdError):
    """The migration lock was not acquired before the lock timeout."""

    exit_code = 6
    meaning = "migration lock held by another replica: not acquired before --lock-timeout"

    def __init__(self, message: str, *, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class LockHeldError(HerdError):
    """``unlock`` refused: the lock's holder is alive (a session lock, or a fresh lease)."""

    exit_code = 6
    meaning = "'herd unlock' refused"

    def __init__(self, message: str, *, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class WaitTimeoutError(HerdError):
    """The database did not become current before the timeout."""

    exit_code = 7
    meaning = "database not current before --timeout"

    def __init__(self, message: str, *, pending: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.pending = pending


class MigrationError(HerdError):
    """A migration raised while this process was the leader."""

    exit_code = 8
    meaning = "a migration failed while this replica led"

    def __init__(self, message: str, *, revision: str | None = None) -> None:
        super().__init__(message)
        self.revision = revision


class LockWaitError(MigrationError):
    """A revision's statements kept timing out waiting for locks (another transaction held
    them) until the attempts or their budget were spent; nothing of it was applied."""


class LeaderFailedError(HerdError):
    """Another replica led the migration and it failed; this one reports that failure."""

    exit_code = 9
    meaning = "another replica's migration failed (its error is reported)"

    def __init__(
        self,
        message: str,
        *,
        revision: str | None,
        host: str | None,
        pid: int | None,
        at: datetime | None,
        error: str | None,
    ) -> None:
        super().__init__(message)
        self.revision = revision
        self.host = host
        self.pid = pid
        self.at = at
        self.error = error


class IncompleteRevisionError(HerdError):
    """A revision was started but never finished on a database without transactional DDL."""

    exit_code = 10
    meaning = "a revision was left half-applied on a database without transactional DDL"

    def __init__(self, message: str, *, revision: str) -> None:
        super().__init__(message)
        self.revision = revision


class LockLostError(HerdError):
    """The lock was lost while this process held it; it stopped before writing more."""

    exit_code = 11
    meaning = "the lock was lost while migrating; stopped before writing more"


class CommandFailedError(HerdError):
    """A wrapped migration command (``herd migrate -- CMD``) exited non-zero."""

    exit_code = 12
    meaning = "the wrapped migration command exited non-zero"

    def __init__(self, message: str, *, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


def _hierarchy(cls: type[HerdError]) -> list[type[HerdError]]:
    """``cls``'s subclasses, depth first, in the order they are defined above."""
    return [c for sub in cls.__subclasses__() for c in (sub, *_hierarchy(sub))]


def _exit_codes() -> dict[int, str]:
    meanings: dict[int, list[str]] = {}
    for cls in _hierarchy(HerdError):
        said = meanings.setdefault(cls.exit_code, [])
        if cls.meaning not in said:  # a subclass that keeps its parent's code and meaning
            said.append(cls.meaning)
    from_errors = {code: ", or ".join(said) for code, said in meanings.items()}
    return dict(sorted({**NOT_ERRORS, **from_errors}.items()))


EXIT_CODES: dict[int, str] = _exit_codes()
"""Exit code -> meaning, for ``herd --help`` and the docs: :data:`NOT_ERRORS` plus each error
class's ``exit_code`` and ``meaning`` (errors sharing a code: their meanings joined by
", or ")."""
