"""herd's own tables (attempt log, revision graph, lease lock): where they go, creating
them race-free (creating them is exactly the kind of DDL that collides when many replicas
start at once), reading them when this user may not, and the ``GRANT`` to name when a
privilege is missing.

Where: ``--herd-schema`` (default: the schema of the version table env.py uses, ``None``
being the connection's default schema). A name may be schema-qualified (``app.herd_history``)
on every backend: a PostgreSQL schema, a MySQL/MariaDB database; SQLite has no schemas
herd's own connection could see (an ``ATTACH`` in env.py is not on it), so a schema other
than ``main`` is refused there.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from ._codes import DENIED, NO_SUCH_TABLE
from ._compat import create_if_not_exists
from ._database import driver_message, error_code
from .errors import ConfigurationError, PrivilegeError

log = logging.getLogger("alembic_herd")


def split_name(text: str, *, option: str) -> tuple[str | None, str]:
    """``'schema.table'`` -> ``('schema', 'table')``; ``'table'`` -> ``(None, 'table')``."""
    parts = text.split(".")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise ConfigurationError(
            f"{option} {text!r} is not a table name: expected NAME or SCHEMA.NAME")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def qualified(schema: str | None, name: str) -> str:
    """The inverse of :func:`split_name`."""
    return f"{schema}.{name}" if schema else name


def check_schema(dialect: str, schema: str | None, *, option: str) -> str | None:
    """``schema`` as herd uses it on ``dialect``: SQLite's ``main`` is the default schema
    (``None``); any other schema is refused on SQLite."""
    if dialect == "sqlite" and schema not in (None, "main"):
        raise ConfigurationError(
            f"{option} names schema {schema!r}, but SQLite has no schemas herd's connection "
            "can see (an ATTACH in env.py is not on herd's connection); leave the schema out "
            "so that herd's tables go in the main database file")
    return None if dialect == "sqlite" else schema


def key_int64(text: str) -> int:
    """A stable signed 64-bit integer for ``text`` (PostgreSQL advisory lock keys)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                          signed=True)


_DDL_KEY = key_int64("alembic-herd:ddl")


def ensure_table(conn: Connection, table: sa.Table, *, absent: bool = False) -> None:
    """Create ``table`` if it does not exist, safely under concurrency.

    ``absent``: the caller saw the table missing a moment ago (under the lock), so the
    existence check before creating is skipped; creating stays safe if it appeared since
    (PostgreSQL: ``IF NOT EXISTS`` under the DDL lock; elsewhere the collision is caught and
    the table re-checked).

    On PostgreSQL two concurrent ``CREATE TABLE IF NOT EXISTS`` collide on
    ``pg_type_typname_nsp_index``, so the table and its indexes are created by one ``DO``
    statement that first takes a transaction-level advisory lock: one round trip on herd's
    own connection (no second connection, no session state; it works through PgBouncer in
    transaction pooling mode). Elsewhere a collision is caught and the table re-checked.
    """
    ensure_tables(conn, [table], absent=absent)


def ensure_tables(conn: Connection, tables: Sequence[sa.Table], *,
                  absent: bool = False) -> None:
    """:func:`ensure_table` for several tables: on PostgreSQL in one ``DO`` statement (one
    round trip for all), on MySQL/MariaDB one ``CREATE TABLE`` each with its indexes in it."""
    if not absent:
        tables = [t for t in tables if not exists(conn, t)]
    if not tables:
        return
    if conn.dialect.name == "postgresql":
        try:
            conn.exec_driver_sql(_create_under_lock(conn, tables))
        except DBAPIError:
            if not all(exists(conn, t) for t in tables):
                raise
        return
    for table in tables:
        try:
            if conn.dialect.name in ("mysql", "mariadb"):
                conn.exec_driver_sql(_create_with_indexes(conn, table))
            else:
                table.create(conn, checkfirst=not absent)
        except DBAPIError:
            if not exists(conn, table):
                raise


def _create_with_indexes(conn: Connection, table: sa.Table) -> str:
    """MySQL/MariaDB: ``CREATE TABLE`` with the table's indexes inside it (one statement,
    where SQLAlchemy sends a ``CREATE INDEX`` after it for each)."""
    ddl = str(CreateTable(table).compile(dialect=conn.dialect)).rstrip()
    assert ddl.endswith(")")
    quote = conn.dialect.identifier_preparer.quote
    indexes = [f"{'UNIQUE ' if index.unique else ''}INDEX {quote(str(index.name))} ("
               + ", ".join(quote(c.name) for c in index.columns) + ")"
               for index in sorted(table.indexes, key=lambda i: i.name or "")]
    return ddl[:-1].rstrip() + "".join(f",\n\t{index}" for index in indexes) + "\n)"


def exists(conn: Connection, table: sa.Table) -> bool:
    """Whether ``table`` exists; ``True`` when this user may not even ask (MySQL/MariaDB's
    ``has_table`` is refused on a database without privileges), so that the caller's
    privilege error, naming the grant, is what the user sees."""
    try:
        return sa.inspect(conn).has_table(table.name, schema=table.schema)
    except DBAPIError as exc:
        if exc.connection_invalidated or not denied(exc):
            raise
        if conn.in_transaction() and conn.get_isolation_level() != "AUTOCOMMIT":
            conn.rollback()
        return True


def exists_column(dialect: str, table: sa.Table, name: str) -> tuple[str, dict[str, Any]] | None:
    """:func:`exists` as a column for another statement on the same session to read beside
    its own (a lock's claim, see :attr:`~alembic_herd.locks.Lock.also`), with its bind
    values (named after ``name``); ``None`` where only :func:`exists` can tell (SQLite).
    PostgreSQL asks what SQLAlchemy's ``has_table`` asks; MySQL/MariaDB the tables
    ``information_schema`` shows this user (any privilege on the table or its database)."""
    params: dict[str, Any] = {f"{name}_t": table.name}
    if dialect == "postgresql":
        if table.schema is None:
            where = ("pg_catalog.pg_table_is_visible(c.oid) AND n.nspname != 'pg_catalog'")
        else:
            where, params[f"{name}_s"] = f"n.nspname = :{name}_s", table.schema
        return (f"EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                f"ON n.oid = c.relnamespace WHERE c.relname = :{name}_t AND c.relkind IN "
                f"('r', 'p', 'f', 'v', 'm') AND {where})"), params
    if dialect in ("mysql", "mariadb"):
        schema = "DATABASE()"
        if table.schema is not None:
            schema, params[f"{name}_s"] = f":{name}_s", table.schema
        return (f"EXISTS (SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {schema} "
                f"AND TABLE_NAME = :{name}_t)"), params
    return None


def _create_under_lock(conn: Connection, tables: Sequence[sa.Table]) -> str:
    """PostgreSQL: one statement (one transaction) that serialises on :data:`_DDL_KEY`,
    then creates ``tables`` and their indexes if they do not exist."""
    items: list[sa.Table | sa.Index] = []
    for table in tables:
        items += [table, *sorted(table.indexes, key=lambda i: i.name or "")]
    body = " ".join(f"{create_if_not_exists(item, conn.dialect)};" for item in items)
    return f"DO $herd$ BEGIN PERFORM pg_advisory_xact_lock({_DDL_KEY}); {body} END $herd$"


T = TypeVar("T")


def read_if_exists(conn: Connection, table: sa.Table, read: Callable[[], T], missing: T, *,
                   role: str = "herd's table", instead: str | None = None,
                   optional: bool = False, writer: bool = False) -> T:
    """Run ``read``; ``missing`` when ``table`` does not exist (yet).

    Tries the query first (one round trip on the common path) and only then asks whether the
    table exists. Another replica may create the table between the two statements, so a
    failure with the table present is retried before it is believed; then it is a
    :class:`~alembic_herd.errors.ConfigurationError` naming the table as ``role`` (and the
    option that names another, ``instead``), or a
    :class:`~alembic_herd.errors.PrivilegeError` naming the grant.

    ``optional`` (herd's own tables): a table this user may not read counts as ``missing``,
    so that a read-only role (a runtime role that may read the version table and nothing of
    herd's) gets what can be known without it instead of an error. ``writer``: the caller
    goes on to write the table, so a refusal names the GRANT to write it.
    """
    for attempt in range(3):
        try:
            return read()
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            if conn.in_transaction() and conn.get_isolation_level() != "AUTOCOMMIT":
                conn.rollback()
            if no_such_table(exc) or not exists(conn, table):
                return missing
            if optional and denied(exc):
                log.debug("%s %r is not readable by this database user; going on without "
                          "it", role, table.fullname)
                return missing
            if attempt == 2:
                raise unusable(conn, table, exc, role, instead, writer=writer) from exc
    raise AssertionError("unreachable")


def no_such_table(exc: BaseException) -> bool:
    """Whether ``exc`` is the server saying the table a query names does not exist: the
    read's own error answers "is it there?" without another round trip."""
    code = error_code(exc)
    if code is not None:
        return code in NO_SUCH_TABLE
    return "no such table" in str(getattr(exc, "orig", exc)).lower()  # SQLite


def denied(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing a privilege (not a missing object)."""
    return error_code(exc) in DENIED


def current_user(conn: Connection) -> str:
    """The user herd connects as, as the server names it (for a GRANT); the URL's user when
    the server cannot be asked."""
    query = {"postgresql": "SELECT current_user",
             "mysql": "SELECT CURRENT_USER()", "mariadb": "SELECT CURRENT_USER()"}
    sql = query.get(conn.dialect.name)
    if sql is not None:
        try:
            user = conn.exec_driver_sql(sql).scalar()
            if user:
                if "@" in str(user):  # MySQL: 'name'@'host'
                    name, host = str(user).rsplit("@", 1)
                    return f"'{name}'@'{host}'"
                return str(user)
        except DBAPIError:
            if conn.in_transaction() and conn.get_isolation_level() != "AUTOCOMMIT":
                conn.rollback()
    return conn.engine.url.username or "<user>"


def refused_at_connect(exc: DBAPIError, url: URL) -> PrivilegeError | None:
    """The error for a user the server lets in but not into this database (PostgreSQL: no
    CONNECT; MySQL/MariaDB: no privilege on it), naming the grant; ``None`` for any other
    connection failure."""
    if not denied(exc):
        return None
    user, database = url.username or "<user>", url.database or "<database>"
    if url.get_backend_name() == "postgresql":
        grant = f"GRANT CONNECT ON DATABASE {database} TO {user}"
    else:  # the least a read-only verb needs; docs/operators.md lists each role's grants
        grant = f"GRANT SELECT ON {database}.alembic_version TO '{user}'@'%'"
    return PrivilegeError(
        f"database user {user!r} may not use database {database!r} "
        f"({driver_message(exc, url)}); run: {grant} (see 'Roles and privileges' in "
        "docs/operators.md for each role's grants)")


def grant_to_read(conn: Connection, table: sa.Table) -> str:
    """The GRANT that lets this user read ``table`` (PostgreSQL: and use its schema)."""
    user = current_user(conn)
    if conn.dialect.name == "postgresql":
        usage = f"GRANT USAGE ON SCHEMA {table.schema} TO {user}; " if table.schema else ""
        return f"{usage}GRANT SELECT ON {table.fullname} TO {user}"
    return f"GRANT SELECT ON {_mysql_name(conn, table)} TO {user}"


def grant_to_write(conn: Connection, table: sa.Table) -> str:
    """The GRANT that lets this user write ``table``, one of herd's."""
    user = current_user(conn)
    if conn.dialect.name == "postgresql":
        usage = f"GRANT USAGE ON SCHEMA {table.schema} TO {user}; " if table.schema else ""
        seq = ("; GRANT USAGE ON ALL SEQUENCES IN SCHEMA "
               f"{table.schema or 'public'} TO {user}")
        return f"{usage}GRANT SELECT, INSERT, UPDATE, DELETE ON {table.fullname} TO {user}{seq}"
    return grant_to_create(conn, table.schema)  # herd creates its tables there too


def grant_to_create(conn: Connection, schema: str | None) -> str:
    """The GRANT that lets this user create herd's tables in ``schema``."""
    user = current_user(conn)
    if conn.dialect.name == "postgresql":
        where = schema or str(conn.exec_driver_sql("SELECT current_schema()").scalar()
                              or "public")
        return f"GRANT USAGE, CREATE ON SCHEMA {where} TO {user}"
    database = schema or conn.engine.url.database or "<database>"
    return f"GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON {database}.* TO {user}"


def _mysql_name(conn: Connection, table: sa.Table) -> str:
    return f"{table.schema or conn.engine.url.database or '<database>'}.{table.name}"


def unusable(conn: Connection, table: sa.Table, exc: DBAPIError, role: str,
             instead: str | None, *, writer: bool = False) -> ConfigurationError:
    """The error for a table that exists but cannot be read as ``role``: no privileges on
    it (:class:`~alembic_herd.errors.PrivilegeError` naming the grant), or another
    application's table by that name."""
    name = table.fullname
    reason = driver_message(exc, conn.engine.url)
    if denied(exc):
        grant = (grant_to_write if writer else grant_to_read)(conn, table)
        return PrivilegeError(
            f"this database user may not use {role} {name!r} ({reason}); run: {grant}")
    other = f"name another with {instead}, or rename that table" if instead else "rename it"
    return ConfigurationError(
        f"{role} {name!r} exists but cannot be read as one ({reason}); another application's "
        f"table by that name? {other[0].upper()}{other[1:]}")
