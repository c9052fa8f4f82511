"""alembic-herd: safe Alembic migrations when many replicas start at once.

One replica migrates under a database lock, the others wait until the schema is current,
nothing is applied twice, and every failure says what happened::

    import alembic_herd

    outcome = alembic_herd.upgrade("alembic.ini")        # migrate or wait
    alembic_herd.wait_until_current("alembic.ini")       # never migrates
    print(alembic_herd.status("alembic.ini").pending)
"""

from ._api import downgrade, history, resolve, status, unlock, upgrade, wait_until_current
from ._durations import to_seconds
from ._history import Attempt
from ._lint import Finding, LintReport, lint
from ._outcome import Outcome, Status
from ._phases import Phase, PhasedRevision, phase_of, revisions_between
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
