"""The database's heads, read on herd's own autocommit connection.

Readiness in Alembic's own terms: the revisions an upgrade to the target would apply is
empty. Reading is one ``SELECT`` on the version table; only when that fails does herd ask
whether the table exists at all (a fresh database).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._environment import Environment
from ._log import event
from ._tables import read_if_exists
from .errors import DatabaseAheadError


def version_table(env: Environment) -> sa.Table:
    return sa.Table(
        env.version_table,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32)),
        schema=env.version_table_schema,
    )


def read_heads(conn: Connection, env: Environment) -> tuple[str, ...]:
    """The revisions in the version table, sorted; ``()`` when the table does not exist."""
    table = version_table(env)
    empty: Sequence[str] = ()
    rows = read_if_exists(
        conn, table, lambda: conn.execute(sa.select(table.c.version_num)).scalars().all(), empty,
        role="version table", instead="--version-table / version_table=")
    return tuple(sorted(rows))


class Pending:
    """What an upgrade to ``target`` would apply, read afresh at each look.

    With ``allow_ahead`` a database at revisions this code does not know counts as current:
    they are kept in :attr:`ahead` and logged once; without it that raises
    :class:`~alembic_herd.errors.DatabaseAheadError`."""

    def __init__(self, env: Environment, target: str, *, allow_ahead: bool) -> None:
        self.env = env
        self.target = target
        self.allow_ahead = allow_ahead
        self.ahead: tuple[str, ...] = ()

    def read(self, conn: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the database's heads, the revisions still to apply)."""
        heads = read_heads(conn, self.env)
        try:
            return heads, self.env.pending(heads, self.target)
        except DatabaseAheadError as exc:
            if not self.allow_ahead:
                raise
            if not self.ahead:
                event("ahead", "database is ahead of this code (%s unknown to the scripts); "
                      "allowed, so nothing to do", ", ".join(exc.unknown),
                      level=logging.WARNING, unknown=list(exc.unknown))
            self.ahead = exc.unknown
            return heads, ()
