"""Pure functions: durations, URL masking, lock choice and keys. No database needed."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from alembic_herd import ConfigurationError, UnsupportedDialectError, to_seconds
from alembic_herd._database import display, error_code, mask_text, parse_url, sync_url
from alembic_herd.errors import EXIT_CODES, HerdError
from alembic_herd.locks import LockKey, choose
from alembic_herd.locks.mysql import lock_name
from alembic_herd.locks.postgresql import parse_application_name


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), (timedelta(minutes=2), 120.0), ("90s", 90.0), ("5m", 300.0),
     ("1h30m", 5400.0), ("250ms", 0.25), (" 2M ", 120.0)],
)
def test_durations_accept_numbers_timedeltas_and_units(value: object, seconds: float) -> None:
    """Durations are seconds, a timedelta, or a string with explicit units."""
    assert to_seconds(value) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["10", "", "5 minutes", "-3s", "1d", True, -1])
def test_durations_refuse_unitless_and_malformed_values(value: object) -> None:
    """A unit-less or malformed duration is a ConfigurationError naming the value."""
    with pytest.raises(ConfigurationError) as err:
        to_seconds(value, name="lock timeout")  # type: ignore[arg-type]
    assert "lock timeout" in str(err.value)


def test_unitless_string_hints_at_the_missing_unit() -> None:
    """'10' (Airflow's 1800-means-1.8-s trap) is refused with a hint to add a unit."""
    with pytest.raises(ConfigurationError, match="add a unit"):
        to_seconds("10")


def test_passwords_never_appear_in_rendered_urls_or_messages() -> None:
    """display() and mask_text() hide the password of a URL and of URL-like text."""
    url = parse_url("postgresql+psycopg://app:s3cret@db:5432/app")
    assert "s3cret" not in display(url)
    assert "s3cret" not in mask_text("failed for postgresql://app:s3cret@db/app", url)
    assert "s3cret" not in mask_text("password s3cret was wrong", url)


def test_malformed_url_is_a_configuration_error_without_the_password() -> None:
    """A malformed URL gives one line that shows the expected form and hides the password."""
    with pytest.raises(ConfigurationError) as err:
        parse_url("not a url :pw@")
    assert "expected dialect+driver://" in str(err.value)
    with pytest.raises(ConfigurationError) as err:
        parse_url("postgres ql://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)


def test_async_drivers_map_to_sync_ones_for_herds_connections() -> None:
    """herd's own connections use a synchronous driver for the same database."""
    assert sync_url(parse_url("postgresql+asyncpg://u@h/d")).drivername == "postgresql+psycopg"
    assert sync_url(parse_url("mysql+aiomysql://u@h/d")).drivername == "mysql+pymysql"
    assert sync_url(parse_url("sqlite+aiosqlite:///x.db")).drivername == "sqlite+pysqlite"


def test_auto_chooses_the_natural_lock_per_dialect_and_the_lease_elsewhere() -> None:
    """auto picks advisory on PostgreSQL/MySQL/MariaDB, file on SQLite, table otherwise."""
    assert choose("auto", "postgresql") == "advisory"
    assert choose("auto", "mariadb") == "advisory"
    assert choose("auto", "sqlite") == "file"
    assert choose("auto", "mssql") == "table"
    assert choose("table", "sqlite") == "table"


def test_unknown_or_unavailable_lock_backends_list_the_choices() -> None:
    """An unknown lock kind, or one the dialect lacks, names the choices."""
    with pytest.raises(ConfigurationError, match="auto, advisory, table, file"):
        choose("redis", "postgresql")
    with pytest.raises(UnsupportedDialectError, match="file, table"):
        choose("advisory", "sqlite")


def test_lock_keys_differ_per_version_table_and_schema() -> None:
    """Two applications (different version tables or schemas) get different lock keys."""
    a = LockKey.for_version_table("alembic_version", "app", None)
    b = LockKey.for_version_table("alembic_version", "billing", None)
    c = LockKey.for_version_table("other_version", "app", None)
    assert len({a.as_int64(), b.as_int64(), c.as_int64()}) == 3
    assert a.as_int64() == LockKey.for_version_table("alembic_version", "app", None).as_int64()
    assert -(2**63) <= a.as_int64() < 2**63


def test_mysql_lock_names_fit_the_64_character_limit() -> None:
    """GET_LOCK names longer than MySQL's limit are shortened with a hash, stably."""
    key = LockKey("herd:" + "x" * 100)
    assert len(lock_name(key)) <= 64
    assert lock_name(key) == lock_name(LockKey("herd:" + "x" * 100))
    assert lock_name(LockKey("herd:short")) == "herd:short"


def test_postgresql_holder_is_read_back_from_application_name() -> None:
    """The leader's application_name 'herd <pid> <since> <host>' names pid, host and time."""
    holder = parse_application_name("herd 4121 2026-11-29T12:30:01Z web-7f9c", 99, None)
    assert (holder.pid, holder.host) == (4121, "web-7f9c")
    assert holder.since is not None and holder.since.hour == 12
    assert "pid 4121 on host web-7f9c since" in holder.describe()
    other = parse_application_name("psql", 77, "10.0.0.1")
    assert "77" in other.describe()


def test_every_error_class_has_a_documented_exit_code() -> None:
    """Each HerdError subclass exits with a code listed in EXIT_CODES."""
    import alembic_herd.errors as errors

    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, HerdError)]
    assert len(classes) >= 12
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, cls


def test_heroku_style_postgres_urls_are_accepted() -> None:
    """A DATABASE_URL spelt postgres:// (Heroku, many PaaS) means postgresql://."""
    assert parse_url("postgres://u:p@h/d").drivername == "postgresql"
    assert parse_url("postgres+psycopg://u@h/d").drivername == "postgresql+psycopg"


class _Psycopg(Exception):
    sqlstate = "42P01"


class _Psycopg2(Exception):
    pgcode = "40P01"


@pytest.mark.parametrize(("driver_error", "code"), [
    (_Psycopg("relation does not exist"), "42P01"),
    (_Psycopg2("deadlock detected"), "40P01"),
    (Exception(1146, "Table 'app.alembic_version' doesn't exist"), 1146),  # pymysql
    (Exception("no such table: alembic_version"), None),  # sqlite3
])
def test_error_code_reads_the_sqlstate_or_the_mysql_errno(driver_error: Exception,
                                                           code: str | int | None) -> None:
    """error_code() gives PostgreSQL's SQLSTATE (psycopg 3 or 2) as a str, MySQL/MariaDB's
    error number as an int, and None for a driver that has neither (SQLite)."""
    assert error_code(sa.exc.DBAPIError("SELECT 1", {}, driver_error)) == code


def test_error_code_is_none_for_an_error_that_is_no_driver_error() -> None:
    """An exception without a driver error behind it (no ``orig``) has no code, even when
    its first argument is a number."""
    assert error_code(OSError(2, "No such file or directory")) is None
