"""A script_location that resolves to a folder without env.py is a configuration error.

Alembic resolves a relative ``script_location`` (``.``, ``migrations``) against the working
directory. Run from elsewhere, herd used to find no revisions and report a database at base
as current (exit 0), where ``alembic upgrade head`` fails. Each test has its control: the same
project run from the folder the path is relative to migrates.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from conftest import PROJECTS, render
from test_bad_inputs import herd, lines


@pytest.fixture
def dot_project(tmp_path: Path) -> Path:
    """The herdset project with ``script_location = .`` (relative to the working directory)."""
    folder = tmp_path / "project"
    shutil.copytree(PROJECTS / "herdset" / "migrations", folder)
    ini = (PROJECTS / "herdset" / "alembic.ini").read_text()
    (folder / "alembic.ini").write_text(ini.replace("%(here)s/migrations", "."))
    return folder


def tables(url: URL) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("verb", ["migrate", "check", "wait", "status", "history"])
def test_every_verb_refuses_a_script_folder_without_env_py(
        verb: str, dot_project: Path, tmp_path: Path, pg: URL) -> None:
    """From another directory every verb exits 3 naming the folder it tried, and touches
    nothing in the database."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = herd(verb, "-c", str(dot_project / "alembic.ini"), "--url", render(pg),
                  cwd=elsewhere)
    assert result.returncode == 3, result.stderr
    errors = [line for line in lines(result.stderr) if line.startswith("herd: error:")]
    assert len(errors) == 1, result.stderr
    assert "no env.py" in errors[0] and str(elsewhere.resolve()) in errors[0]
    assert "Traceback" not in result.stderr
    assert tables(pg) == set()


def test_migrate_from_elsewhere_fails_and_from_the_right_folder_succeeds(
        db: URL, dot_project: Path, tmp_path: Path) -> None:
    """The control, on every backend: the same config migrates when run from its folder, and
    a later check from elsewhere is a configuration error, not 'this code is older'."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ini = str(dot_project / "alembic.ini")
    refused = herd("migrate", "-c", ini, "--url", render(db), cwd=elsewhere)
    assert refused.returncode == 3, refused.stderr
    assert "alembic_version" not in tables(db)

    migrated = herd("migrate", "-c", ini, "--url", render(db), cwd=dot_project)
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated 4 revision(s)" in migrated.stdout

    check = herd("check", "-c", ini, "--url", render(db), cwd=elsewhere)
    assert check.returncode == 3, check.stderr
    assert "no env.py" in check.stderr and "older than the database" not in check.stderr
