"""Revisions declare their phase (``herd_phase = "expand"``); no database needed."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic_herd import ConfigurationError, RevisionNotFoundError, phase_of, revisions_between

PROJECTS = Path(__file__).parent / "projects"
SNIPPET = Path(__file__).parent.parent / "docs" / "script.py.mako"


def scripts(project: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(str(PROJECTS / project / "alembic.ini")))


def test_declared_phase_is_read_from_the_module_variable() -> None:
    """``herd_phase = "expand"`` / ``"contract"`` beside ``revision`` is the revision's phase."""
    directory = scripts("lint-phases")
    assert phase_of(directory.get_revision("p1")) == "expand"
    assert phase_of(directory.get_revision("p3"), unmarked="expand") == "contract"


def test_unmarked_revision_counts_as_the_setting_contract_by_default() -> None:
    """A revision without herd_phase counts as contract unless the caller says expand."""
    unmarked = scripts("lint-phases").get_revision("p2")
    assert phase_of(unmarked) == "contract"
    assert phase_of(unmarked, unmarked="expand") == "expand"


def test_none_counts_as_unmarked() -> None:
    """``herd_phase = None`` (a template's unset value) is unmarked, not an error."""
    revision = scripts("lint-phases").get_revision("p4")
    assert phase_of(revision, unmarked="expand") == "expand"
    assert phase_of(revision) == "contract"


def test_revisions_between_two_heads_oldest_first_with_phases() -> None:
    """What a database at p4 holds beyond code at p1: p2, p3, p4 in order, with phases."""
    between = revisions_between(scripts("lint-phases"), "p1", "p4", unmarked="expand")
    assert [(r.revision, r.phase, r.declared) for r in between] == [
        ("p2", "expand", False), ("p3", "contract", True), ("p4", "expand", False)]
    assert between[1].path.endswith("p3.py")


def test_revisions_between_base_and_heads() -> None:
    """``lower=None`` is the base and ``upper`` may be a tuple of heads."""
    directory = scripts("lint-phases")
    between = revisions_between(directory, None, tuple(directory.get_heads()))
    assert [r.revision for r in between] == ["p1", "p2", "p3", "p4"]
    assert [r.phase for r in between] == ["expand", "contract", "contract", "contract"]


def test_revisions_between_an_unknown_revision_is_a_revision_error() -> None:
    """A revision id the scripts do not have is a RevisionNotFoundError naming it."""
    with pytest.raises(RevisionNotFoundError, match="'nope'"):
        revisions_between(scripts("lint-phases"), "nope", "p4")


def test_misspelt_phase_names_file_value_and_allowed_values() -> None:
    """``herd_phase = "expnad"`` is a ConfigurationError with the file, value and choices."""
    with pytest.raises(ConfigurationError) as caught:
        phase_of(scripts("lint-bad").get_revision("b1"))
    message = str(caught.value)
    assert "b1.py" in message
    assert "'expnad'" in message
    assert "'expand'" in message and "'contract'" in message


def test_misspelt_phase_fails_revisions_between_too() -> None:
    """A bad value is never silently read as unmarked when walking a range."""
    with pytest.raises(ConfigurationError, match="expnad"):
        revisions_between(scripts("lint-bad"), None, "b1")


def test_unmarked_setting_accepts_only_a_phase() -> None:
    """The unmarked setting is validated: 'expand' or 'contract'."""
    with pytest.raises(ConfigurationError, match="'maybe'"):
        phase_of(scripts("lint-phases").get_revision("p2"), unmarked="maybe")  # type: ignore[arg-type]


def generate(tmp_path: Path, x: list[str] | None) -> str:
    """Run ``alembic revision`` with the shipped template; return the new revision id."""
    project = tmp_path / "project"
    shutil.copytree(PROJECTS / "lint-phases", project)
    shutil.copy(SNIPPET, project / "migrations" / "script.py.mako")
    config = Config(str(project / "alembic.ini"), cmd_opts=argparse.Namespace(x=x))
    script = command.revision(config, message="add a column", rev_id="new1")
    assert script is not None and not isinstance(script, list)
    return script.revision


@pytest.mark.parametrize(("x", "expected"), [
    (None, "contract"), (["herd_phase=expand"], "expand"), (["herd_phase=contract"], "contract"),
])
def test_alembic_revision_from_the_shipped_template_keeps_the_phase(
        tmp_path: Path, x: list[str] | None, expected: str) -> None:
    """``alembic revision [-x herd_phase=expand]`` writes a herd_phase line herd reads back."""
    revision = generate(tmp_path, x)
    config = Config(str(tmp_path / "project" / "alembic.ini"))
    script = ScriptDirectory.from_config(config).get_revision(revision)
    assert script is not None
    assert f"herd_phase = {expected!r}" in Path(script.path).read_text()
    assert phase_of(script, unmarked="expand" if expected == "contract" else "contract") \
        == expected
