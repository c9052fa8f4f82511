"""alembic-herd: safe Alembic migrations when many replicas start at once.

One replica migrates under a database lock, the others wait until the schema is current,
nothing is applied twice, and every failure says what happened::

    import alembic_herd

    outcome = alembic_herd.upgrade("alembic.ini")        # migrate or wait
    alembic_herd.wait_until_current("alembic.ini")       # never migrates
    print(alembic_herd.status("alembic.ini").pending)
"""

from typing import TYPE_CHECKING

from .errors import (
    CommandFailedError,
    ConfigurationError,
    DatabaseAheadError,
    DatabaseUnavailableError,
    HerdError,
    Holder,
    IncompleteRevisionError,
    LeaderFailedError,
    LockHeldError,
    LockLostError,
    LockTimeoutError,
    LockWaitError,
    MigrationError,
    RevisionNotFoundError,
    UnsupportedDialectError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from ._api import downgrade, history, resolve, status, unlock, upgrade, wait_until_current
    from ._durations import to_seconds
    from ._history import Attempt
    from ._lint import Finding, LintReport, lint
    from ._outcome import Outcome, Status
    from ._phases import Phase, PhasedRevision, phase_of, revisions_between

# The rest of the public API is imported on first use (PEP 562): a process that only checks
# whether the database is current (every restart of every replica) does not pay for the
# linter, the leader or the attempt log.
_LAZY = {
    **dict.fromkeys(("downgrade", "history", "resolve", "status", "unlock", "upgrade",
                     "wait_until_current"), "._api"),
    "to_seconds": "._durations",
    "Attempt": "._history",
    **dict.fromkeys(("Finding", "LintReport", "lint"), "._lint"),
    **dict.fromkeys(("Outcome", "Status"), "._outcome"),
    **dict.fromkeys(("Phase", "PhasedRevision", "phase_of", "revisions_between"), "._phases"),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "CommandFailedError",
    "ConfigurationError",
    "DatabaseAheadError",
    "DatabaseUnavailableError",
    "Finding",
    "HerdError",
    "Holder",
    "IncompleteRevisionError",
    "LeaderFailedError",
    "LintReport",
    "LockHeldError",
    "LockLostError",
    "LockTimeoutError",
    "LockWaitError",
    "MigrationError",
    "Outcome",
    "Phase",
    "PhasedRevision",
    "RevisionNotFoundError",
    "Status",
    "UnsupportedDialectError",
    "WaitTimeoutError",
    "__version__",
    "downgrade",
    "history",
    "lint",
    "phase_of",
    "resolve",
    "revisions_between",
    "status",
    "to_seconds",
    "unlock",
    "upgrade",
    "wait_until_current",
]
