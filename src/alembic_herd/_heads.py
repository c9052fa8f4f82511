"""The database's heads, read on herd's own autocommit connection.

Readiness in Alembic's own terms: the revisions an upgrade to the target would apply is
empty. Reading is one ``SELECT`` on the version table; only when that fails does herd ask
whether the table exists at all (a fresh database).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ._environment import Environment
from ._tables import read_if_exists


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
