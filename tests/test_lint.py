"""``herd lint``: each rule on a flagged and a clean revision, rendered offline (no database)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alembic_herd import ConfigurationError, LintReport, RevisionNotFoundError, lint
from alembic_herd.errors import EXIT_CODES, HerdError
from alembic_herd.errors import LINT_FINDINGS as FINDINGS_EXIT_CODE

RULES_PROJECT = str(Path(__file__).parent / "projects" / "lint-rules" / "alembic.ini")
BAD_PROJECT = str(Path(__file__).parent / "projects" / "lint-bad" / "alembic.ini")


def rules_found(revision: str, dialect: str = "postgresql",
                server_version: str | None = None) -> list[str]:
    report = lint(RULES_PROJECT, dialect=dialect, server_version=server_version,
                  revisions=[revision])
    assert report.revisions == (revision,)
    return [finding.rule for finding in report.findings]


# rule, flagged revision, clean revision, dialect, server version
CASES = [
    ("drop-table", "drop_table", "drop_table_contract", "postgresql", None),
    ("drop-column", "drop_column", "drop_column_contract", "postgresql", None),
    ("drop-column", "drop_column", "drop_column_contract", "mysql", None),
    ("rename-table", "rename_table", "rename_table_contract", "postgresql", None),
    ("rename-column", "rename_column", "rename_column_contract", "postgresql", None),
    ("rename-column", "rename_column", "rename_column_contract", "mariadb", None),
    ("rename-column", "rename_column", "rename_column_contract", "sqlite", None),
    ("not-null", "set_not_null", "drop_not_null", "postgresql", None),
    ("not-null", "add_not_null", "add_not_null_default", "postgresql", None),
    ("not-null", "add_not_null", "add_not_null_default", "mysql", None),
    ("column-type-change", "type_change", "type_change_contract", "postgresql", None),
    ("column-type-change", "type_change", "type_change_contract", "mysql", None),
    ("index-not-concurrent", "index_plain", "index_concurrent", "postgresql", None),
    ("index-not-concurrent", "index_plain", "index_new_table", "postgresql", None),
    ("index-not-concurrent", "unique_constraint", "index_concurrent", "postgresql", None),
    ("constraint-not-valid", "foreign_key", "foreign_key_not_valid", "postgresql", None),
    ("constraint-not-valid", "check_constraint", "check_not_valid", "postgresql", None),
    ("default-rewrites-table", "volatile_default", "stable_default", "postgresql", None),
    ("default-rewrites-table", "add_not_null_default", "nullable_column", "postgresql", "10"),
    ("default-rewrites-table", "serial_column", "nullable_column", "postgresql", None),
    ("default-rewrites-table", "mysql_expression_default", "add_not_null_default", "mysql",
     None),
    ("default-rewrites-table", "mysql_expression_default", "add_not_null_default", "mariadb",
     "10.6"),
    ("unrenderable", "unrenderable", "nullable_column", "postgresql", None),
]


@pytest.mark.parametrize(("rule", "flagged", "clean", "dialect", "version"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES])
def test_rule_flags_one_revision_and_passes_the_other(
        rule: str, flagged: str, clean: str, dialect: str, version: str | None) -> None:
    """A rule reports exactly its finding on the flagged revision and nothing on the clean one."""
    assert rules_found(flagged, dialect, version) == [rule]
    assert rules_found(clean, dialect, version) == []


def test_postgresql_11_adds_a_constant_default_without_rewrite() -> None:
    """The same constant default is flagged for PostgreSQL 10 and not for 11 or unspecified."""
    assert rules_found("add_not_null_default", server_version="10") == ["default-rewrites-table"]
    assert rules_found("add_not_null_default", server_version="11") == []
    assert rules_found("add_not_null_default") == []


def test_index_rules_are_postgresql_only() -> None:
    """MySQL builds secondary indexes online and has no NOT VALID: no index/constraint finding."""
    assert rules_found("index_plain", "mysql") == []
    assert rules_found("foreign_key", "mysql") == []


def test_lock_rules_apply_to_contract_revisions_too() -> None:
    """A contract revision still runs under traffic: a plain CREATE INDEX is flagged in it."""
    assert rules_found("index_contract") == ["index-not-concurrent"]


def test_raw_sql_is_checked_like_operations() -> None:
    """``op.execute("ALTER TABLE ... DROP COLUMN ...")`` in an unmarked revision is flagged."""
    (finding,) = lint(RULES_PROJECT, revisions=["drop_column_raw"]).findings
    assert (finding.rule, finding.phase) == ("drop-column", "unmarked")
    assert finding.statement == "ALTER TABLE users DROP COLUMN nickname;"


def test_finding_line_has_revision_rule_statement_and_fix() -> None:
    """One line per finding: revision, rule id, the SQL, what happens and the fix."""
    (finding,) = lint(RULES_PROJECT, revisions=["index_plain"]).findings
    line = finding.line()
    assert "\n" not in line
    assert line.startswith("index_plain index-not-concurrent 'CREATE INDEX ix_users_name")
    assert "postgresql_concurrently=True" in line
    assert "autocommit_block()" in line
    assert finding.path.endswith("index_plain.py")


def test_acknowledged_finding_is_reported_but_does_not_fail() -> None:
    """``herd_lint_ignore = {rule: reason}`` keeps the finding, with its reason, and exits 0."""
    report = lint(RULES_PROJECT, revisions=["acknowledged"])
    (finding,) = report.findings
    assert finding.rule == "index-not-concurrent"
    assert finding.acknowledged == "users has 300 rows: the lock lasts milliseconds"
    assert "(acknowledged: users has 300 rows" in finding.line()
    assert report.open_findings == ()
    assert report.exit_code == 0


def test_acknowledgement_covers_only_its_own_rule() -> None:
    """The same plain index without the acknowledgement fails the run."""
    report = lint(RULES_PROJECT, revisions=["index_plain", "acknowledged"])
    assert [f.revision for f in report.open_findings] == ["index_plain"]
    assert report.exit_code == FINDINGS_EXIT_CODE


def test_summary_counts_open_and_acknowledged_findings() -> None:
    """The summary line names the target and counts open and acknowledged findings."""
    report = lint(RULES_PROJECT, dialect="postgresql", server_version="16",
                  revisions=["nullable_column", "drop_table", "acknowledged"])
    assert report.summary() == ("3 revisions checked for postgresql 16; findings: 1 open, "
                                "1 acknowledged")


def test_findings_exit_code_is_documented_and_its_own() -> None:
    """The findings exit code is in the exit-code table, meaning lint findings only."""
    assert "'herd lint' only" in EXIT_CODES[FINDINGS_EXIT_CODE]
    assert FINDINGS_EXIT_CODE not in {cls.exit_code for cls in _all_errors()}
    assert lint(RULES_PROJECT, revisions=["nullable_column"]).exit_code == 0


def test_json_report_for_ci() -> None:
    """The JSON report lists every finding with its fields and the exit code."""
    report = lint(RULES_PROJECT, revisions=["nullable_column", "drop_table", "acknowledged"])
    data = json.loads(report.to_json())
    assert data["dialect"] == "postgresql"
    assert data["revisions"] == ["nullable_column", "drop_table", "acknowledged"]
    assert data["exit_code"] == FINDINGS_EXIT_CODE
    assert [(f["revision"], f["rule"], f["acknowledged"] is None) for f in data["findings"]] \
        == [("drop_table", "drop-table", True), ("acknowledged", "index-not-concurrent", False)]
    assert set(data["findings"][0]) == {"revision", "path", "phase", "rule", "statement",
                                        "problem", "fix", "acknowledged"}


def test_default_range_is_every_revision_and_since_narrows_it() -> None:
    """Without revisions lint checks base..heads; ``since`` starts after that revision."""
    everything = lint(RULES_PROJECT)
    assert everything.revisions[0] == "drop_table"
    assert everything.revisions[-1] == "serial_column"
    assert lint(RULES_PROJECT, since="unrenderable").revisions == ("acknowledged",
                                                                   "serial_column")


def test_empty_revision_list_checks_nothing() -> None:
    """``revisions=[]`` (a database with nothing pending) checks nothing, not everything."""
    report = lint(RULES_PROJECT, revisions=[])
    assert (report.revisions, report.findings, report.exit_code) == ((), (), 0)


def test_unknown_revision_is_a_revision_error() -> None:
    """A revision id the scripts lack is a RevisionNotFoundError naming it."""
    with pytest.raises(RevisionNotFoundError, match="'nope'"):
        lint(RULES_PROJECT, revisions=["nope"])


@pytest.mark.parametrize(("revision", "match"), [
    ("b2", r"b2\.py: herd_lint_ignore = \['index-not-concurrent'\] must map rule ids to reasons"),
    ("b3", r"b3\.py: herd_lint_ignore names unknown rules index-not-concurent"),
])
def test_bad_acknowledgement_is_a_configuration_error(revision: str, match: str) -> None:
    """An acknowledgement without a reason, or of an unknown rule, names the file."""
    with pytest.raises(ConfigurationError, match=match):
        lint(BAD_PROJECT, revisions=[revision])


def test_misspelt_phase_stops_lint() -> None:
    """lint reads the phase too: ``herd_phase = "expnad"`` is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=r"b1\.py: herd_phase = 'expnad'"):
        lint(BAD_PROJECT, revisions=["b1"])


@pytest.mark.parametrize(("options", "match"), [
    ({"dialect": "oracle"}, "postgresql, mysql, mariadb, sqlite"),
    ({"server_version": "eleven"}, "'eleven' is not a version"),
])
def test_bad_target_is_a_configuration_error(options: dict[str, str], match: str) -> None:
    """An unknown dialect or an unreadable server version is refused before rendering."""
    with pytest.raises(ConfigurationError, match=match):
        lint(RULES_PROJECT, **options)


def test_missing_sqlglot_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sqlglot installed, lint is a ConfigurationError naming the 'lint' extra."""
    monkeypatch.setitem(sys.modules, "sqlglot", None)
    with pytest.raises(ConfigurationError, match=r"alembic-herd\[lint\]"):
        lint(RULES_PROJECT)


def test_report_type_is_public() -> None:
    """lint returns the public LintReport."""
    assert isinstance(lint(RULES_PROJECT, revisions=["nullable_column"]), LintReport)


def test_revision_file_that_does_not_import_is_a_configuration_error() -> None:
    """A syntax error in a revision file is reported as a broken script, not a finding."""
    bad_syntax = str(Path(__file__).parent / "projects" / "bad-syntax" / "alembic.ini")
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        lint(bad_syntax)


def _all_errors() -> list[type[HerdError]]:
    found: list[type[HerdError]] = []
    todo: list[type[HerdError]] = [HerdError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_the_herd_lint_command_prints_findings_and_exits_13() -> None:
    """`herd lint` prints one line per finding on stdout, a summary on stderr, and exits 13
    with open findings, 0 without; --json is one object; --pending with revisions is bad
    input (exit 3)."""
    def herd_lint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "alembic_herd.cli", "lint", "-c",
                               str(RULES_PROJECT), *args], capture_output=True, text=True,
                              check=False)

    flagged = herd_lint("drop_table", "nullable_column")
    assert flagged.returncode == FINDINGS_EXIT_CODE, flagged.stderr
    assert [line.split()[:2] for line in flagged.stdout.splitlines()] == [
        ["drop_table", "drop-table"]]
    assert "findings: 1 open" in flagged.stderr
    clean = herd_lint("nullable_column")
    assert (clean.returncode, clean.stdout) == (0, "")
    as_json = herd_lint("--json", "drop_table")
    assert json.loads(as_json.stdout)["exit_code"] == FINDINGS_EXIT_CODE
    both = herd_lint("--pending", "drop_table")
    assert both.returncode == 3 and "herd: error:" in both.stderr
