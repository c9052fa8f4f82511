"""Every default herd has, defined once.

The library's keyword arguments, the CLI's options and their ``--help``, ``[tool.herd]``
loading and the docs all read these names; nothing else spells a default out. Durations are
seconds (the CLI shows them with :func:`~alembic_herd._durations.format_seconds`).
"""

from __future__ import annotations

from typing import Final

# -- waiting ------------------------------------------------------------------------------

LOCK_TIMEOUT = 600.0
"""``upgrade`` / ``herd migrate`` / ``herd run``: connecting plus waiting for the lock (not
the migration itself)."""

WAIT_TIMEOUT = 600.0
"""``wait_until_current`` / ``herd wait``: how long a non-migrating replica waits."""

RESOLVE_LOCK_TIMEOUT = 30.0
"""``resolve``: how long an operator's command waits for the lock."""

UNLOCK_TIMEOUT = 30.0
"""``unlock``: connecting, plus the one look at the lock."""

CONNECT_TIMEOUT = 10.0
"""One connection attempt (a host that does not answer); also the bound on connecting for
``status`` / ``history`` / ``check`` (a probe must not hang)."""

POLL_INTERVAL = 0.5
"""The cap of the jittered exponential backoff between two looks at the lock or the heads."""

LISTEN_POLL_INTERVAL = 5.0
"""The backoff cap of a waiter that LISTENs for the leader's notifications (PostgreSQL with
psycopg 3): a notification wakes it at once, so it polls only to cover a lost one."""

POOLED_POLL_INTERVAL = 1.5
"""The backoff cap of a PostgreSQL waiter whose connection goes through a pooler (PgBouncer
in transaction mode loses LISTEN: no notification ever arrives). The waiter learns of the
leader's end only by polling, so this bounds how late it is and sets its load: with a
jitter of [0.9, 1], a look every 1.35-1.5 s (1.425 s on average), one statement each once
the wait is steady (the heads; the attempt log every :data:`POOLED_LOG_EVERY` s). Issue 17
asks for readiness within 2 s of the leader's end, and for at most 0.5 statements per second
per waiter where waiters LISTEN; by polling alone the two conflict (a look every T s is 1/T
statements per second and up to T s late). Readiness is the goal a deploy feels, so it wins
here: ready about 0.7 s after the leader's commit on average and at most 1.5 s (plus one
look and the pooler's queue), for about 0.70 + 0.07 = 0.77 statements per second per waiter
(1,000 waiters: about 770 one-row reads a second, carried by the pool's few server
sessions; ``tests/test_wakeup.py`` counts it). Nothing cheaper tells a pooled client of the
end: LISTEN needs a session of its own, and a statement that blocks until the end (a shared
advisory lock, ``pg_sleep``) would hold one of the pool's server sessions, which the
application shares."""

POOLED_POLL_JITTER = 0.9
"""The shortest pooled pause, as a fraction of the backoff: a narrow jitter keeps the rate
near its budget while the herd's looks stay spread out (they start at different moments)."""

POOLED_LOG_EVERY = 30.0
"""Through a pooler, how often a waiter reads the attempt log (a leader's failure; two
statements): a failure is told up to this late there (at once on a direct connection, which
the failed leader notifies)."""

NOTIFY_EVERY = 1.0
"""A leader notifies the waiters after a commit at most this often (and always at its end)."""

REPORT_EVERY = 5.0
"""How often a waiting replica logs whom it waits for."""

# -- the lease lock (``--lock table``) ----------------------------------------------------

LEASE_TTL = 30.0
"""A lease not renewed for this long is expired; the holder renews it every TTL / 3."""

# -- TCP keepalives on PostgreSQL sessions ------------------------------------------------

KEEPALIVES = (10, 5, 3)
"""idle seconds, interval seconds, probes: a peer that stops answering is dropped after
idle + interval * count = 25 s of silence (client side and, on the lock and migration
sessions, server side)."""

# -- reconnecting and races ---------------------------------------------------------------

RECONNECT_PAUSE = 1.0
"""At most this long (jittered) between losing a connection and connecting again."""

LEAD_RETRIES = 3
"""How often a replica whose migration lost its connection starts over before giving up."""

RACE_RETRIES = 5
"""How often a leader re-runs what is still pending after colliding with a runner outside
herd (each time after :data:`RACE_PAUSE` seconds)."""

RACE_PAUSE = 1.0

RACE_GRACE = 5.0
"""How long a leader that hit a collision error waits for the version table to show another
runner's work before it believes its own migration failed."""

# -- lock waits of the migration's own statements (see _lockwait.py) ---------------------

LOCK_WAIT_TIMEOUT = 3.0
"""How long one statement of a migration may wait for a table lock on its first attempt
(PostgreSQL ``lock_timeout``; MySQL/MariaDB ``lock_wait_timeout`` and
``innodb_lock_wait_timeout``, whole seconds). While an ``ALTER TABLE`` waits, every
application query on that table queues behind it: this bounds that stall. 0 turns the
policy (settings and retries) off."""

LOCK_WAIT_ATTEMPTS = 10
"""How many times a revision whose statement timed out waiting for a lock is tried in all,
before the leader gives up."""

LOCK_WAIT_BUDGET = 600.0
"""The time all attempts of one leader may take together; no attempt starts after it."""

LOCK_WAIT_GROWTH = 1.5
"""Each retry waits this many times longer for its locks than the one before ..."""

LOCK_WAIT_CEILING = 3.0
"""... up to this multiple of the first attempt's timeout (the application's worst stall)."""

LOCK_WAIT_PAUSE = 1.0
"""The pause before the first retry; it doubles for each retry after it ..."""

LOCK_WAIT_PAUSE_CAP = 30.0
"""... up to this (jittered by up to a quarter, so that it never falls into step with a
periodic job)."""

STATEMENT_TIMEOUT = 0.0
"""A cap on any one statement of a migration (PostgreSQL ``statement_timeout``, MariaDB
``max_statement_time``); 0 is off. Not retried: a statement that runs too long fails the
revision."""

BLOCKER_POLL = 0.25
"""While a migration runs, how often herd looks at who blocks its session (the blocker is
named when a lock wait times out: once the wait is over, the server no longer says)."""

LOCK_CONFIRM_EVERY = 0.5
"""Before each revision the leader confirms its lock (:meth:`~alembic_herd.locks.Lock.confirm`):
with a round trip when the lock's session has news (the server closed it) or when this many
seconds have passed since the last confirmation; otherwise by looking at that session's
socket, which costs no round trip. A chain of quick revisions then pays a round trip about
every half second instead of one per revision; a pause or a partition longer than this
(nothing arrives on the socket) is caught by the time. Each revision's version-table update
stays a compare-and-set on the version table, and the lease fences inside every revision's
transaction, whatever this is."""

# -- names --------------------------------------------------------------------------------

HISTORY_TABLE = "herd_history"
"""herd's attempt log."""

LEASE_TABLE = "herd_lock"
"""The lease lock's table."""

GRAPH_TABLE = "herd_revisions"
"""herd's record of the revisions it applied (parents, phase): what lets code older than
the database decide whether it may run on it."""

HERD_SCHEMA: str | None = None
"""Where herd's tables go (``--herd-schema``): ``None`` is the schema of the version table
env.py uses (the connection's default schema when that has none)."""

# -- rolling deploys ----------------------------------------------------------------------

UNMARKED_PHASE: Final = "contract"
"""What a revision without ``herd_phase`` counts as (``expand`` or ``contract``)."""

CONFIG_FILE = "alembic.ini"

STATUS_RECENT = 5
"""``status``: how many recent attempts to show."""

HISTORY_LIMIT = 50
"""``history``: how many attempts to list."""

DEMO_REPLICAS = 8
"""``herd demo``: how many replicas start at the same moment."""

# -- wrapped migration commands (``herd migrate -- CMD``) ---------------------------------

COMMAND_GRACE = 10.0
"""After forwarding SIGTERM/SIGINT to a wrapped command's process group, how long herd waits
before it kills the group. Well inside Kubernetes' default 30 s termination grace period, so
herd still records the attempt and releases its lock before the kubelet's SIGKILL."""

STDERR_TAIL = 20
"""How many of a wrapped command's last stderr lines herd keeps for the attempt log."""

LINT_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite")
"""The dialects ``herd lint --dialect`` renders SQL for."""
