"""The database's heads, read on herd's own autocommit connection.

Readiness in Alembic's own terms: the revisions an upgrade to the target would apply is
empty. Reading is one ``SELECT`` on the version table; only when that fails does herd ask
whether the table exists at all (a fresh database).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import _defaults as defaults
from ._environment import Environment
from ._log import event
from ._phases import Phase, check_unmarked, phase_of
from ._tables import read_if_exists
from .errors import ConfigurationError, DatabaseAheadError


def version_table(env: Environment) -> sa.Table:
    """The version table's description, one per name and schema in a process: SQLAlchemy
    2.x keys its statement cache on the Table object, so a waiter's every look at the heads
    reuses the compiled ``SELECT`` instead of compiling it again."""
    return _version_table(env.version_table, env.version_table_schema)


@functools.lru_cache(maxsize=64)
def _version_table(name: str, schema: str | None) -> sa.Table:
    return sa.Table(name, sa.MetaData(), sa.Column("version_num", sa.String(32)), schema=schema)


def read_heads(conn: Connection, env: Environment) -> tuple[str, ...]:
    """The revisions in the version table, sorted; ``()`` when the table does not exist."""
    env.locate(conn)  # once per Environment: where env.py's context keeps the table
    table = version_table(env)
    empty: Sequence[str] = ()
    rows = read_if_exists(
        conn, table, lambda: conn.execute(sa.select(table.c.version_num)).scalars().all(), empty,
        role="version table", instead="--version-table / version_table=")
    return tuple(sorted(rows))


class Pending:
    """What an upgrade to ``target`` would apply, read afresh at each look.

    A database at revisions this code does not know counts as current when herd's revision
    graph shows that every one of them is expand (:func:`~._graph.judge`; they are kept in
    :attr:`ahead` and logged once); otherwise that raises
    :class:`~alembic_herd.errors.DatabaseAheadError` naming the contract revision. With
    ``allow_ahead`` it counts as current without asking.

    With ``expand_only`` the revisions from the first contract one on are left out
    (:attr:`left`), and :attr:`goal` is the revision to upgrade to instead of ``target``.
    """

    def __init__(self, env: Environment, target: str, *, allow_ahead: bool,
                 expand_only: bool = False, unmarked: Phase = defaults.UNMARKED_PHASE,
                 history_table: str = defaults.HISTORY_TABLE) -> None:
        self.env = env
        self.target = target
        self.allow_ahead = allow_ahead
        self.expand_only = expand_only
        check_unmarked(unmarked)
        self.unmarked = unmarked
        self.history_table = history_table
        self.ahead: tuple[str, ...] = ()
        self.ahead_expand = False
        """The database is ahead only by expand revisions (judged from herd's graph)."""
        self.goal = target
        self.left: tuple[str, ...] = ()

    def read(self, conn: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the database's heads, the revisions still to apply)."""
        heads = read_heads(conn, self.env)
        try:
            pending = self.env.pending(heads, self.target)
        except DatabaseAheadError as exc:
            self._ahead(conn, heads, exc)
            return heads, ()
        return heads, self._cut(pending) if self.expand_only else pending

    def _ahead(self, conn: Connection, heads: tuple[str, ...], exc: DatabaseAheadError) -> None:
        if self.allow_ahead:
            if not self.ahead:
                event("ahead", "database is ahead of this code (%s unknown to the scripts); "
                      "allowed, so nothing to do", ", ".join(exc.unknown),
                      level=logging.WARNING, unknown=list(exc.unknown))
            self.ahead = exc.unknown
            return
        from ._graph import judge  # only for a database ahead of this code

        verdict = judge(conn, self.env, heads, exc.unknown, target=self.target,
                        unmarked=self.unmarked, history_table=self.history_table)
        if verdict.error is not None:
            raise verdict.error
        if not self.ahead:
            event("ahead", "%s", verdict.line(), ahead=list(verdict.revisions))
        self.ahead, self.ahead_expand = verdict.revisions, True

    def _cut(self, pending: tuple[str, ...]) -> tuple[str, ...]:
        """``pending`` up to its first contract revision; sets :attr:`goal` and
        :attr:`left`."""
        script = self.env.script
        phases = [phase_of(script.get_revision(r), unmarked=self.unmarked) for r in pending]
        if "contract" not in phases:
            self.goal, self.left = self.target, ()
            return pending
        first = phases.index("contract")
        expand, self.left = pending[:first], pending[first:]
        below = set().union(*(self.env.applied((r,)) - {r} for r in expand))
        ends = [r for r in expand if r not in below]
        if len(ends) > 1:
            raise ConfigurationError(
                f"--expand-only: the expand revisions before contract revision "
                f"{self.left[0]} end on several branches ({', '.join(sorted(ends))}), so no "
                "one revision is the place to stop; migrate one branch at a time with "
                "--target, or merge them in an expand revision before the contract one")
        self.goal = ends[0] if ends else self.target
        return expand
