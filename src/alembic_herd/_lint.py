"""``herd lint``: find what would break the previous release, without a database.

Each revision's ``upgrade()`` runs against Alembic's offline mode for the target dialect
(``as_sql=True``: a MigrationContext that writes SQL to a buffer instead of executing it), one
revision at a time, so every statement is attributed to its revision. Each statement is then
parsed with sqlglot and checked by the rules in ``_lint_rules``.

Why the rendered SQL and not Alembic's operation objects: the SQL is what the database will
run, so ``op.execute("ALTER TABLE ...")`` is checked like ``op.drop_column()``, and dialect
options (``postgresql_concurrently``, ``postgresql_not_valid``) show up as they render.

A revision acknowledges a finding beside its phase, with the reason::

    herd_phase = "expand"
    herd_lint_ignore = {"index-not-concurrent": "events has 2k rows: the lock lasts ms"}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError, RevisionError
from alembic.util import CommandError

from . import _defaults as defaults
from ._environment import load_config, script_error
from ._lint_rules import RULES, Target
from ._phases import declared_phase, revisions_between
from .errors import LINT_FINDINGS as FINDINGS_EXIT_CODE
from .errors import ConfigurationError, RevisionNotFoundError

IGNORE_VARIABLE = "herd_lint_ignore"
DIALECTS = defaults.LINT_DIALECTS


@dataclass(frozen=True)
class Finding:
    """One statement of one revision that a rule flags."""

    revision: str
    path: str
    phase: Literal["expand", "contract", "unmarked"]
    """What the revision file declares."""
    rule: str
    statement: str
    problem: str
    fix: str
    acknowledged: str | None = None
    """The reason given in the revision's ``herd_lint_ignore``, if any."""

    def line(self) -> str:
        """The finding as one line of text."""
        statement = " ".join(self.statement.split())
        if len(statement) > 120:
            statement = statement[:117] + "..."
        text = f"{self.revision} {self.rule} {statement!r}: {self.problem}; fix: {self.fix}"
        if self.acknowledged is not None:
            text += f" (acknowledged: {self.acknowledged})"
        return text


@dataclass(frozen=True)
class LintReport:
    """What ``lint`` checked and found."""

    dialect: str
    server_version: str | None
    revisions: tuple[str, ...]
    findings: tuple[Finding, ...]

    @property
    def open_findings(self) -> tuple[Finding, ...]:
        """The findings no revision acknowledges: these make the exit code nonzero."""
        return tuple(f for f in self.findings if f.acknowledged is None)

    @property
    def exit_code(self) -> int:
        return FINDINGS_EXIT_CODE if self.open_findings else 0

    def summary(self) -> str:
        """One line: what was checked and how many findings are open or acknowledged."""
        target = self.dialect + (f" {self.server_version}" if self.server_version else "")
        acknowledged = len(self.findings) - len(self.open_findings)
        return (f"{len(self.revisions)} revisions checked for {target}; findings: "
                f"{len(self.open_findings)} open, {acknowledged} acknowledged")

    def to_json(self) -> str:
        return json.dumps({
            "dialect": self.dialect,
            "server_version": self.server_version,
            "revisions": list(self.revisions),
            "findings": [asdict(f) for f in self.findings],
            "exit_code": self.exit_code,
        }, indent=2)


def lint(
    config: Config | str | os.PathLike[str],
    *,
    dialect: str = "postgresql",
    server_version: str | None = None,
    revisions: Sequence[str] | None = None,
    since: str | None = None,
) -> LintReport:
    """Render and check revisions for ``dialect`` (``server_version`` like ``"10"`` or
    ``"8.0.11"``; None means a current release).

    Checks ``revisions`` if given (an empty list checks nothing: pass a database's pending
    revisions as they are), else every revision after ``since`` (None: from the base) up to
    the heads. Nothing connects to a database.
    """
    if dialect not in DIALECTS:
        raise ConfigurationError(
            f"cannot lint for dialect {dialect!r}; choose one of {', '.join(DIALECTS)}"
        )
    _require_sqlglot()
    target = Target(dialect, _parse_version(server_version))
    cfg = load_config(config)
    try:
        script_directory = ScriptDirectory.from_config(cfg)
        heads = script_directory.get_heads()  # imports every revision file
    except Exception as exc:  # a revision file that does not import, a cycle, ...
        raise script_error(exc, cfg) from exc
    scripts = _select(script_directory, heads, revisions, since)
    findings = [finding for script in scripts for finding in _lint_revision(script, target)]
    return LintReport(dialect, server_version, tuple(s.revision for s in scripts),
                      tuple(findings))


def _select(script_directory: ScriptDirectory, heads: Sequence[str],
            revisions: Sequence[str] | None, since: str | None) -> list[Script]:
    if revisions is None:
        in_range = revisions_between(script_directory, since, heads)
        return [_script(script_directory, r.revision) for r in in_range]
    return [_script(script_directory, revision) for revision in revisions]


def _script(script_directory: ScriptDirectory, revision: str) -> Script:
    try:
        script = script_directory.get_revision(revision) if revision else None
    except (ResolutionError, RevisionError, CommandError):
        script = None
    if script is None:
        raise RevisionNotFoundError(
            f"revision {revision!r} not found in the migration scripts; see 'alembic history'"
        )
    return script


def _lint_revision(script: Script, target: Target) -> list[Finding]:
    from ._lint_sql import problems  # sqlglot is optional: lint() checked it is installed

    phase = declared_phase(script)
    acknowledged = _acknowledgements(script)

    def finding(rule: str, statement: str, problem: str) -> Finding:
        return Finding(revision=script.revision, path=script.path, phase=phase or "unmarked",
                       rule=rule, statement=statement, problem=problem, fix=RULES[rule].fix,
                       acknowledged=acknowledged.get(rule))

    try:
        statements = _render(script, target.dialect)
    except Exception as exc:  # the user's upgrade(): anything it raises is the finding
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return [finding("unrenderable", "upgrade()", f"cannot render offline ({detail})")]

    return [finding(p.rule, p.statement, p.detail) for p in problems(statements, target)
            if not (phase == "contract" and RULES[p.rule].breaks_old_code)]


class _StatementSink:
    """An output buffer for offline mode that keeps each emitted statement apart."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def write(self, text: str) -> None:
        if text.strip():
            self.statements.append(text.strip())

    def flush(self) -> None:
        pass


def _render(script: Script, dialect: str) -> list[str]:
    """The SQL statements ``script``'s upgrade() emits in offline mode for ``dialect``."""
    sink = _StatementSink()
    context = MigrationContext.configure(
        dialect_name=dialect,
        opts={"as_sql": True, "output_buffer": sink, "literal_binds": True},
    )
    with Operations.context(context):
        script.module.upgrade()
    return sink.statements


def _require_sqlglot() -> None:
    try:
        import sqlglot  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "herd lint parses SQL with sqlglot, which is not installed; "
            "pip install 'alembic-herd[lint]'"
        ) from exc


def _acknowledgements(script: Script) -> dict[str, str]:
    """The revision's ``herd_lint_ignore``: rule id -> the reason it is acceptable."""
    value = getattr(script.module, IGNORE_VARIABLE, None)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(rule, str) and isinstance(reason, str) and reason.strip()
            for rule, reason in value.items()):
        raise ConfigurationError(
            f"{script.path}: {IGNORE_VARIABLE} = {value!r} must map rule ids to reasons, "
            f"e.g. {IGNORE_VARIABLE} = {{'index-not-concurrent': 'the table has 2k rows'}}"
        )
    unknown = sorted(set(value) - set(RULES))
    if unknown:
        raise ConfigurationError(
            f"{script.path}: {IGNORE_VARIABLE} names unknown rules {', '.join(unknown)}; "
            f"the rules are {', '.join(RULES)}"
        )
    return dict(value)


def _parse_version(version: str | None) -> tuple[int, ...] | None:
    if version is None:
        return None
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise ConfigurationError(
            f"server version {version!r} is not a version like '10', '16.2' or '8.0.11'"
        ) from None
