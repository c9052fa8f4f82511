"""alembic_herd._compat gives the same SQL and types on SQLAlchemy 1.4 and 2.x (make test runs
this file under both: the main venv and make test-sqla14)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import make_url

from alembic_herd._compat import (
    DOUBLE,
    PG_DRIVER,
    SQLALCHEMY_2,
    create_engine,
    create_if_not_exists,
    variant,
)
from alembic_herd._database import parse_url, sync_url
from alembic_herd._history import history_table

PG = make_url("postgresql://").get_dialect()()


def test_a_variant_applies_to_every_dialect_named() -> None:
    stamp = variant(sa.DateTime(timezone=True), mysql.DATETIME(fsp=6), "mysql", "mariadb")
    assert stamp.compile(dialect=mysql.dialect()) == "DATETIME(6)"
    assert stamp.compile(dialect=mysql.dialect(is_mariadb=True)) == "DATETIME(6)"
    assert stamp.compile(dialect=PG) == "TIMESTAMP WITH TIME ZONE"


def test_double_is_double_precision_everywhere() -> None:
    assert DOUBLE.compile(dialect=PG) in ("DOUBLE PRECISION", "FLOAT(53)")
    assert DOUBLE.compile(dialect=mysql.dialect()) in ("DOUBLE", "FLOAT(53)")
    assert DOUBLE.compile(dialect=sqlite.dialect()) in ("DOUBLE", "FLOAT", "REAL")


def test_create_if_not_exists_covers_the_table_and_its_indexes() -> None:
    table = history_table()
    dialect = PG
    created = create_if_not_exists(table, dialect)
    assert created.startswith("CREATE TABLE IF NOT EXISTS herd_history")
    (index,) = table.indexes
    assert create_if_not_exists(index, dialect).startswith("CREATE INDEX IF NOT EXISTS ix_herd_")


def test_engines_have_2x_connection_semantics(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/c.db")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        conn.commit()  # a legacy 1.4 Connection has no commit()
        assert conn.execute(sa.text("SELECT x FROM t")).scalar_one() == 1
    engine.dispose()


def test_a_psycopg_url_is_read_through_the_driver_this_sqlalchemy_has() -> None:
    expected = "psycopg" if SQLALCHEMY_2 else "psycopg2"
    assert expected == PG_DRIVER
    url = sync_url(parse_url("postgresql+psycopg://u@h/d"))
    assert url.drivername == ("postgresql+psycopg" if SQLALCHEMY_2 else "postgresql+psycopg2")
    assert sync_url(parse_url("postgresql+asyncpg://u@h/d")).drivername.startswith(
        f"postgresql+{PG_DRIVER}")
