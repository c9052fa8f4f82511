"""SQLAlchemy 1.4 and 2.x: the few places where herd needs one or the other's spelling.

Every version difference lives here, so that the rest of herd is written once against
SQLAlchemy 2.x and these helpers carry it on 1.4 (the oldest supported: 1.4.36).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import TypeEngine

SQLALCHEMY_2 = int(sa.__version__.split(".", 1)[0]) >= 2

# A double-precision float: ``sa.Double`` is new in 2.0; 1.4's ``Float(53)`` renders as
# DOUBLE PRECISION (PostgreSQL), DOUBLE (MySQL/MariaDB) and REAL (SQLite) as well.
DOUBLE: sa.Float[float] = sa.Double() if SQLALCHEMY_2 else sa.Float(precision=53)

# PostgreSQL's driver herd names when it picks one: psycopg 3 has a dialect only on 2.x.
PG_DRIVER = "psycopg" if SQLALCHEMY_2 else "psycopg2"


def variant(base: TypeEngine[Any], other: TypeEngine[Any], *dialects: str) -> TypeEngine[Any]:
    """``base``, but ``other`` on each dialect named (2.x takes many names in one
    ``with_variant()`` call, 1.4 only one)."""
    for name in dialects:
        base = base.with_variant(other, name)
    return base


def create_engine(url: sa.engine.URL | str, **options: Any) -> Engine:
    """An engine with 2.x's connection semantics on both: ``commit()``/``rollback()``,
    autobegin, no library-level autocommit (``future=True`` on 1.4, the only kind on 2.x),
    and SQLite connections usable from another thread (a lease's heartbeat), as 2.x's
    pysqlite default is."""
    if not SQLALCHEMY_2:
        options.setdefault("future", True)
        if sa.engine.make_url(url).get_backend_name() == "sqlite":
            options["connect_args"] = {"check_same_thread": False,
                                       **options.get("connect_args", {})}
    return sa.create_engine(url, **options)


def create_if_not_exists(item: sa.Table | sa.Index, dialect: Dialect) -> str:
    """``CREATE TABLE/INDEX IF NOT EXISTS`` for ``item`` (``if_not_exists=`` is 2.0's)."""
    element: CreateTable | CreateIndex
    if isinstance(item, sa.Table):
        element = CreateTable(item, if_not_exists=True) if SQLALCHEMY_2 else CreateTable(item)
    else:
        element = CreateIndex(item, if_not_exists=True) if SQLALCHEMY_2 else CreateIndex(item)
    sql = str(element.compile(dialect=dialect)).strip()
    if SQLALCHEMY_2:
        return sql
    for head in ("CREATE TABLE ", "CREATE INDEX ", "CREATE UNIQUE INDEX "):
        if sql.startswith(head):
            return f"{head}IF NOT EXISTS {sql[len(head):]}"
    raise ValueError(f"not a CREATE TABLE or CREATE INDEX statement: {sql[:40]!r}")
