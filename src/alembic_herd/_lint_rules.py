"""The rules of ``herd lint``: what each flags, whom it hurts, and what to do instead.

Rules that *break old code* (drop, rename, NOT NULL, type change) apply only to revisions not
marked contract: deploying a contract revision after the old release is gone is the fix.
Rules about *locks and rewrites* apply to every revision, because a contract revision still
runs under the new release's traffic. How each rule reads the SQL is in ``_lint_sql``.
"""

from __future__ import annotations

from dataclasses import dataclass

CONTRACT_FIX = (
    "mark the revision herd_phase = 'contract' and deploy it after the old release is gone"
)


@dataclass(frozen=True)
class Rule:
    """One thing herd lint flags, and what to do instead."""

    id: str
    breaks_old_code: bool
    fix: str


RULES: dict[str, Rule] = {rule.id: rule for rule in (
    Rule("drop-table", True, CONTRACT_FIX),
    Rule("drop-column", True, CONTRACT_FIX),
    Rule("rename-table", True,
         "create the new table beside the old one (or a view under the old name) and drop "
         "the old one in a revision marked herd_phase = 'contract'"),
    Rule("rename-column", True,
         "add the new column, have the new release write both, and drop the old one in a "
         "revision marked herd_phase = 'contract'"),
    Rule("not-null", True,
         "add the column nullable or with a server default now; set NOT NULL in a revision "
         "marked herd_phase = 'contract' once every writer fills it"),
    Rule("column-type-change", True,
         "add a column of the new type and backfill it; drop the old column in a revision "
         "marked herd_phase = 'contract'"),
    Rule("index-not-concurrent", False,
         "use op.create_index(..., postgresql_concurrently=True) inside "
         "op.get_context().autocommit_block() (for a unique constraint: create the unique "
         "index concurrently, then ADD CONSTRAINT ... USING INDEX)"),
    Rule("constraint-not-valid", False,
         "add it with postgresql_not_valid=True, then run ALTER TABLE ... VALIDATE "
         "CONSTRAINT in a later revision (it does not block writes)"),
    Rule("default-rewrites-table", False,
         "add the column without a default, then SET DEFAULT (new rows only) and backfill "
         "existing rows in batches"),
    Rule("unrenderable", False,
         "make upgrade() renderable offline (no reads through op.get_bind()), or check its "
         "SQL by hand and acknowledge with herd_lint_ignore"),
)}

@dataclass(frozen=True)
class Target:
    """The database the SQL is checked for: a dialect name and, optionally, its version."""

    dialect: str
    version: tuple[int, ...] | None = None

    def older_than(self, *version: int) -> bool:
        """True only when a version was given and it is older (None means a current one)."""
        return self.version is not None and self.version < version

    @property
    def is_mysql(self) -> bool:
        return self.dialect in ("mysql", "mariadb")

    @property
    def sqlglot_dialect(self) -> str:
        """sqlglot's name for the dialect (it reads MariaDB as MySQL)."""
        return {"postgresql": "postgres", "mariadb": "mysql"}.get(self.dialect, self.dialect)
