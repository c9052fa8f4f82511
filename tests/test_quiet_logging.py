"""herd's offline probe of env.py stays out of the application's logging.

herd runs inside applications (a FastAPI lifespan, a Celery worker) whose other threads keep
logging while it works. Alembic's INFO lines about the probe are dropped for herd's own
thread only, and whatever the probe changed (filters, env.py's ``fileConfig()``) is undone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from alembic_herd._environment import load_environment
from conftest import PROJECTS

MIGRATION_LOG = logging.getLogger("alembic.runtime.migration")  # "Generating static SQL"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def heard() -> Iterator[list[logging.LogRecord]]:
    """The records that reach a handler on the ``alembic`` logger, set to INFO meanwhile."""
    alembic_log = logging.getLogger("alembic")
    level, collect = alembic_log.level, Collect()
    alembic_log.addHandler(collect)
    alembic_log.setLevel(logging.INFO)
    yield collect.records
    alembic_log.removeHandler(collect)
    alembic_log.setLevel(level)


class OtherThreadLogsMeanwhile(logging.Filter):
    """Placed on Alembic's logger before herd's own filter, so it sees the probe's records
    first: at the probe's first one, another thread logs through the same logger (while herd
    is inside env.py, its filter in place) and is waited for."""

    def __init__(self) -> None:
        super().__init__()
        self.probe_thread = threading.get_ident()
        self.probe_said: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if threading.get_ident() == self.probe_thread:
            self.probe_said.append(record.getMessage())
            if len(self.probe_said) == 1:
                other = threading.Thread(
                    target=MIGRATION_LOG.info, args=("other thread, during the probe",))
                other.start()
                other.join()
        return True


def test_probe_quiets_alembic_in_its_own_thread_only(
        heard: list[logging.LogRecord], tmp_path: Path) -> None:
    """While herd probes env.py, Alembic's INFO records from herd's thread are dropped, the
    same logger's records from another thread arrive, and afterwards nothing is left behind:
    no filter, no logging.disable, and herd's thread is heard again."""
    hook = OtherThreadLogsMeanwhile()
    MIGRATION_LOG.addFilter(hook)
    try:
        load_environment(PROJECTS / "cookbook" / "alembic.ini",
                         url=f"sqlite:///{tmp_path / 'app.db'}")
        assert "Generating static SQL" in hook.probe_said  # the probe did log at INFO
        assert [r.getMessage() for r in heard] == ["other thread, during the probe"]
        assert heard[0].thread != hook.probe_thread

        assert MIGRATION_LOG.filters == [hook]
        assert logging.root.manager.disable == logging.NOTSET
        MIGRATION_LOG.info("herd's thread, after the probe")
        assert heard[-1].getMessage() == "herd's thread, after the probe"
    finally:
        MIGRATION_LOG.removeFilter(hook)


def test_probe_undoes_env_py_file_config(tmp_path: Path) -> None:
    """An env.py that calls fileConfig() (which replaces the root handlers and disables every
    logger its ini does not name) leaves the application's logging as it was after the probe."""
    root = logging.getLogger()
    app_log = logging.getLogger("myapp.orders")
    collect = Collect()
    app_log.addHandler(collect)
    root_level, root_handlers = root.level, list(root.handlers)
    try:
        load_environment(PROJECTS / "appschema" / "alembic.ini",
                         url=f"sqlite:///{tmp_path / 'app.db'}")
        assert (root.level, root.handlers) == (root_level, root_handlers)
        assert not app_log.disabled
        app_log.warning("order 7 shipped")
        assert [r.getMessage() for r in collect.records] == ["order 7 shipped"]
    finally:
        app_log.removeHandler(collect)
