"""herd's own tables (history, lease lock): created race-free, since creating them is
exactly the kind of DDL that collides when many replicas start at once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ._compat import create_if_not_exists
from ._database import driver_message, error_code
from .errors import ConfigurationError


def key_int64(text: str) -> int:
    """A stable signed 64-bit integer for ``text`` (PostgreSQL advisory lock keys)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                          signed=True)


_DDL_KEY = key_int64("alembic-herd:ddl")


def ensure_table(conn: Connection, table: sa.Table) -> None:
    """Create ``table`` if it does not exist, safely under concurrency.

    On PostgreSQL two concurrent ``CREATE TABLE IF NOT EXISTS`` collide on
    ``pg_type_typname_nsp_index``, so the table and its indexes are created by one ``DO``
    statement that first takes a transaction-level advisory lock: one round trip on herd's
    own connection (no second connection, no session state; it works through PgBouncer in
    transaction pooling mode). Elsewhere a collision is caught and the table re-checked.
    """
    if sa.inspect(conn).has_table(table.name, schema=table.schema):
        return
    try:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(_create_under_lock(conn, table))
        else:
            table.create(conn, checkfirst=True)
    except DBAPIError:
        if not sa.inspect(conn).has_table(table.name, schema=table.schema):
            raise


def _create_under_lock(conn: Connection, table: sa.Table) -> str:
    """PostgreSQL: one statement (one transaction) that serialises on :data:`_DDL_KEY`,
    then creates ``table`` and its indexes if they do not exist."""
    items: list[sa.Table | sa.Index] = [table, *sorted(table.indexes, key=lambda i: i.name or "")]
    body = " ".join(f"{create_if_not_exists(item, conn.dialect)};" for item in items)
    return f"DO $herd$ BEGIN PERFORM pg_advisory_xact_lock({_DDL_KEY}); {body} END $herd$"


T = TypeVar("T")


def read_if_exists(conn: Connection, table: sa.Table, read: Callable[[], T], missing: T, *,
                   role: str = "herd's table", instead: str | None = None) -> T:
    """Run ``read``; ``missing`` when ``table`` does not exist (yet).

    Tries the query first (one round trip on the common path) and only then asks whether the
    table exists. Another replica may create the table between the two statements, so a
    failure with the table present is retried before it is believed; then it is a
    :class:`~alembic_herd.errors.ConfigurationError` naming the table as ``role`` (and the
    option that names another, ``instead``).
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
                raise unusable(conn, table, exc, role, instead) from exc
    raise AssertionError("unreachable")


_DENIED_SQLSTATES = {"42501"}  # PostgreSQL insufficient_privilege
_DENIED_MYSQL = {1142, 1143}  # table / column command denied


def unusable(conn: Connection, table: sa.Table, exc: DBAPIError, role: str,
             instead: str | None) -> ConfigurationError:
    """The error for one of herd's tables that exists but cannot be read as herd's: no
    privileges on it, or another application's table by that name."""
    name = table.fullname
    reason = driver_message(exc, conn.engine.url)
    if error_code(exc) in _DENIED_SQLSTATES | _DENIED_MYSQL:
        sequence = (" and USAGE on its id sequence" if conn.dialect.name == "postgresql"
                    else "")
        return ConfigurationError(
            f"{role} {name!r} exists but this database user may not use it ({reason}); "
            f"grant SELECT, INSERT, UPDATE on it{sequence} to the user herd connects as")
    other = f"name another with {instead}, or rename that table" if instead else "rename it"
    return ConfigurationError(
        f"{role} {name!r} exists but cannot be read as one ({reason}); another application's "
        f"table by that name? {other[0].upper()}{other[1:]}")
