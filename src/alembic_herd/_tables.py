"""herd's own tables (history, lease lock): created race-free, since creating them is
exactly the kind of DDL that collides when many replicas start at once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError


def key_int64(text: str) -> int:
    """A stable signed 64-bit integer for ``text`` (PostgreSQL advisory lock keys)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                          signed=True)


_DDL_KEY = key_int64("alembic-herd:ddl")


def ensure_table(conn: Connection, table: sa.Table) -> None:
    """Create ``table`` if it does not exist, safely under concurrency.

    On PostgreSQL the CREATE runs in a transaction that first takes a transaction-level
    advisory lock (which also works through PgBouncer in transaction pooling mode): two
    concurrent ``CREATE TABLE IF NOT EXISTS`` would otherwise collide on
    ``pg_type_typname_nsp_index``. Elsewhere a collision is caught and the table re-checked.
    """
    if sa.inspect(conn).has_table(table.name, schema=table.schema):
        return
    try:
        if conn.dialect.name == "postgresql":
            with conn.engine.connect() as raw:
                ddl = raw.execution_options(isolation_level="READ COMMITTED")
                with ddl.begin():
                    ddl.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DDL_KEY})
                    table.create(ddl, checkfirst=True)
        else:
            table.create(conn, checkfirst=True)
    except DBAPIError:
        if not sa.inspect(conn).has_table(table.name, schema=table.schema):
            raise


T = TypeVar("T")


def read_if_exists(conn: Connection, table: sa.Table, read: Callable[[], T], missing: T) -> T:
    """Run ``read``; ``missing`` when ``table`` does not exist (yet).

    Tries the query first (one round trip on the common path) and only then asks whether the
    table exists. Another replica may create the table between the two statements, so a
    failure with the table present is retried before it is believed.
    """
    for attempt in range(3):
        try:
            return read()
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            if conn.in_transaction() and conn.get_isolation_level() != "AUTOCOMMIT":
                conn.rollback()
            if not sa.inspect(conn).has_table(table.name, schema=table.schema):
                return missing
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
