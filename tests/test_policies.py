"""Policies: a database ahead of this code, and a separate URL for herd's lock."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

import alembic_herd
from conftest import PROJECTS, render

CONFIG = str(PROJECTS / "herdset" / "alembic.ini")


def stamp_unknown(url: URL) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'e5future'"))
    engine.dispose()


def test_database_ahead_of_the_code_fails_clearly_by_default(pg: URL) -> None:
    """A version table at a revision the scripts lack raises DatabaseAheadError naming it."""
    alembic_herd.upgrade(CONFIG, url=render(pg))
    stamp_unknown(pg)
    with pytest.raises(alembic_herd.DatabaseAheadError) as err:
        alembic_herd.upgrade(CONFIG, url=render(pg))
    assert err.value.unknown == ("e5future",)
    assert "ahead of this code by e5future" in str(err.value)
    assert "no entry in herd's revision graph" in str(err.value)
    assert err.value.exit_code == 5
    with pytest.raises(alembic_herd.DatabaseAheadError):
        alembic_herd.wait_until_current(CONFIG, url=render(pg), timeout=5)


def test_allow_ahead_treats_a_newer_database_as_current(pg: URL) -> None:
    """With allow_ahead an old replica starts: nothing is migrated, the unknown head reported."""
    alembic_herd.upgrade(CONFIG, url=render(pg))
    stamp_unknown(pg)
    outcome = alembic_herd.upgrade(CONFIG, url=render(pg), allow_ahead=True)
    assert outcome.action == "current"
    assert outcome.ahead == ("e5future",)
    assert "ahead of this code" in outcome.describe()
    waited = alembic_herd.wait_until_current(CONFIG, url=render(pg), allow_ahead=True, timeout=5)
    assert waited.ahead == ("e5future",)
    status = alembic_herd.status(CONFIG, url=render(pg), allow_ahead=True)
    assert status.is_current and status.ahead == ("e5future",)


def test_lock_url_carries_herds_own_connection(pg: URL) -> None:
    """With lock_url herd locks and reads through that URL while env.py migrates via url."""
    broken_for_herd = pg.set(database="no_such_database_for_herd")
    with pytest.raises(alembic_herd.DatabaseUnavailableError):
        alembic_herd.upgrade(CONFIG, url=render(pg), lock_url=render(broken_for_herd),
                             lock_timeout=5)
    outcome = alembic_herd.upgrade(CONFIG, url=render(pg), lock_url=render(pg))
    assert outcome.action == "migrated"
